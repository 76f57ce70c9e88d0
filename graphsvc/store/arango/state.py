"""Job state and change markers, kept in the database's `graphsvc_state` collection.

A change marker is a counter per collection, bumped after every write made through this
backend. (A collection's revision from the server is an opaque string that does not
order, and it resets when a collection is dropped and restored.) Writes made by other
clients do not move it.
"""

from __future__ import annotations

import hashlib
import time

from arango import errno as arango_errno

from graphsvc.errors import ArangoError
from graphsvc.store.arango import aql
from graphsvc.store.arango.connection import ArangoConnection
from graphsvc.store.checks import is_document_key

STATE_COLLECTION = "graphsvc_state"


def state_document_key(key: str) -> str:
    """A state key as a document key: readable when it is a valid one, hashed otherwise;
    prefixed so that job state and change markers never collide."""
    if is_document_key(key) and len(key) <= 200:
        return "k:" + key
    return "h:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def marker_document_key(collection: str) -> str:
    return "m:" + collection


class ArangoState(ArangoConnection):
    _state_ready = False  # the state collection is known to exist

    def _ensure_state_collection(self, create: bool) -> bool:
        if self._state_ready:
            return True
        with self._errors(STATE_COLLECTION):
            exists = self._db.has_collection(STATE_COLLECTION)
        if not exists:
            if not create:
                return False
            try:
                with self._errors(STATE_COLLECTION, action="creating the state collection"):
                    self._db.create_collection(STATE_COLLECTION)
            except ArangoError as exc:
                if exc.error_code != arango_errno.DUPLICATE_NAME:
                    raise
        self._state_ready = True
        return True

    def get_state(self, key: str) -> dict | None:
        if not self._ensure_state_collection(create=False):
            return None
        bind_vars = {"@collection": STATE_COLLECTION, "key": state_document_key(key)}
        values = self._all(aql.GET_STATE, bind_vars, STATE_COLLECTION)
        return values[0] if values else None

    def put_state(self, key: str, value: dict) -> None:
        self._ensure_state_collection(create=True)
        bind_vars = {"@collection": STATE_COLLECTION, "key": state_document_key(key), "name": key, "value": value}
        self._all(aql.PUT_STATE, bind_vars, STATE_COLLECTION)

    def delete_state(self, key: str) -> None:
        if self._ensure_state_collection(create=False):
            bind_vars = {"@collection": STATE_COLLECTION, "key": state_document_key(key)}
            self._all(aql.DELETE_STATE, bind_vars, STATE_COLLECTION)

    def change_marker(self, name: str) -> int:
        self._kind(name)
        if not self._ensure_state_collection(create=False):
            return 0
        markers = self._all(
            aql.GET_CHANGE_MARKER, {"@collection": STATE_COLLECTION, "key": marker_document_key(name)}, STATE_COLLECTION
        )
        return int(markers[0]) if markers and markers[0] is not None else 0

    def _bump(self, name: str) -> int:
        """Move the collection's change marker on; concurrent writers retry."""
        self._ensure_state_collection(create=True)
        bind_vars = {"@collection": STATE_COLLECTION, "key": marker_document_key(name), "name": name}
        for attempt in range(8):
            try:
                return int(self._all(aql.BUMP_CHANGE_MARKER, bind_vars, STATE_COLLECTION)[0])
            except ArangoError as exc:
                racing = exc.error_code in (arango_errno.CONFLICT, arango_errno.UNIQUE_CONSTRAINT_VIOLATED)
                if not racing or attempt == 7:
                    raise
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")
