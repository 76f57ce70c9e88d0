"""Job state in the embedded store's `_state` table; a write can carry it in its own
transaction."""

from __future__ import annotations

import json

from graphsvc.store.embedded.connection import EmbeddedConnection


class EmbeddedState(EmbeddedConnection):
    """The port's job state."""

    def get_state(self, key: str) -> dict | None:
        row = self._one("SELECT value FROM _state WHERE key = ?", [key])
        return json.loads(row[0]) if row else None

    def put_state(self, key: str, value: dict) -> None:
        self._put_state(key, value)

    def _put_state(self, key: str, value: dict) -> None:  # also inside a caller's transaction
        # an UPDATE of the existing row costs a third of INSERT OR REPLACE (a restore writes one per block)
        value_json = json.dumps(value)
        if not self._run("UPDATE _state SET value = ? WHERE key = ?", [value_json, key])[0][0]:
            self._run("INSERT INTO _state VALUES (?, ?)", [key, value_json])

    def delete_state(self, key: str) -> None:
        self._run("DELETE FROM _state WHERE key = ?", [key])
