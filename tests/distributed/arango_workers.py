"""ArangoDB for Ray workers, without a server: the request harness (tests/store/arango/harness.py)
opened inside each worker by a picklable address, every request it records appended to a
file the test reads back (the worker's own stub is gone with its process)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from graphsvc.store.arango import aql
from tests.store.arango.harness import URL, ArangoStub, cursor_response
from tests.store.arango.routes_store import serve_collections, serve_key_ranges, serve_queries, writing_cursor


class RecordingStub(ArangoStub):
    """An ArangoStub that also appends each request (and the violations so far) to a file."""

    def __init__(self, record_dir: Path):
        super().__init__()
        self._record = Path(record_dir) / f"{os.getpid()}-{id(self)}.jsonl"

    def send_request(self, session, method, url, headers=None, params=None, data=None, auth=None):
        try:
            return super().send_request(session, method, url, headers, params, data, auth)
        finally:
            last = self.requests[-1]
            with self._record.open("a") as out:
                out.write(json.dumps({"method": last.method, "endpoint": last.endpoint, "body": last.body,
                                      "violations": self.violations}) + "\n")


@dataclass(frozen=True)
class StubAddress:
    """Where Ray workers "open" the store: a recording stub serving `collections` to range
    pulls (`reads`), or a collection `products` taking attribute write-backs."""

    record_dir: str
    collections: dict = field(default_factory=dict)
    coordinators: int = 1
    url: str = URL

    def open(self, *, read_only: bool = True):
        server = RecordingStub(Path(self.record_dir))
        if self.collections:
            serve_key_ranges(server, self.collections)
        else:
            serve_collections(server, products="document")
            serve_queries(server, {
                aql.FIRST_MISSING_KEY: lambda r: cursor_response([]),
                aql.UPDATE_ATTRIBUTES: lambda r: writing_cursor([], len(r.body["bindVars"]["rows"])),
            })
        return server.store()


def recorded(record_dir: Path) -> list[dict]:
    """Every request the workers' stubs recorded."""
    return [json.loads(line) for path in sorted(Path(record_dir).glob("*.jsonl"))
            for line in path.read_text().splitlines()]
