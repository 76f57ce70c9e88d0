"""Routes shared by the store tests: what the server answers about collections, cursors
that write, and the change-marker bookkeeping every write ends with. Shapes as the
ArangoDB 3.12 HTTP API documents them."""

from __future__ import annotations

import itertools
import zlib
from typing import Any, Callable

from graphsvc.store.arango import aql
from graphsvc.store.arango.state import STATE_COLLECTION
from tests.store.arango.harness import ArangoStub, Recorded, cursor_response

_TYPES = {"document": 2, "edge": 3}


def collection_properties(name: str, kind: str = "document") -> dict:
    # GET /_api/collection/{name}/properties
    # (https://docs.arangodb.com/3.12/develop/http-api/collections/#get-the-properties-of-a-collection)
    return {"error": False, "code": 200, "id": "1", "name": name, "type": _TYPES[kind], "status": 3,
            "isSystem": False, "waitForSync": False, "globallyUniqueId": "h" + name,
            "keyOptions": {"type": "traditional", "allowUserKeys": True, "lastValue": 0},
            "writeConcern": 1, "cacheEnabled": False, "computedValues": None, "schema": None,
            "syncByRevision": True, "usesRevisionsAsDocumentIds": True}


def collection_listing(*names: tuple[str, str]) -> dict:
    # GET /_api/collection (https://docs.arangodb.com/3.12/develop/http-api/collections/#list-all-collections)
    return {"error": False, "code": 200, "result": [
        {"id": str(n), "name": name, "isSystem": name.startswith("_"), "status": 3, "type": _TYPES[kind],
         "globallyUniqueId": f"h{n}"}
        for n, (name, kind) in enumerate(names, start=1)
    ]}


def writing_cursor(result: list, writes: int, status: int = 201) -> tuple[int, dict]:
    """A cursor answer whose `extra.stats.writesExecuted` is `writes`."""
    status, body = cursor_response(result, status=status)
    body["extra"]["stats"]["writesExecuted"] = writes
    return status, body


def serve_collections(server: ArangoStub, **kinds: str) -> None:
    """Collections that exist (name=kind), the state collection among them."""
    listing = collection_listing(*kinds.items(), (STATE_COLLECTION, "document"))
    server.on("get", "/_api/collection", listing)
    for name, kind in kinds.items():
        server.on("get", f"/_api/collection/{name}/properties", collection_properties(name, kind))


def serve_queries(server: ArangoStub, answers: dict[str, Callable[[Recorded], Any]]) -> None:
    """POST /_api/cursor answered by the AQL text sent; the change marker's bump answers 1."""
    answers = {aql.BUMP_CHANGE_MARKER: lambda r: writing_cursor([1], 1), **answers}

    def answer(request: Recorded):
        query = request.body["query"]
        if query not in answers:
            raise AssertionError(f"no answer for the query {query!r}")
        return answers[query](request)

    server.on("post", "/_api/cursor", answer)


def serve_key_ranges(server: ArangoStub, collections: dict[str, list[dict]], *, server_batch: int = 10_000) -> None:
    """Collections holding `collections[name]` (edges when their documents have `_from`),
    answering the range pulls' queries (aql.SAMPLE_KEYS, PULL_KEY_RANGE[_FROM],
    PULL_EDGE_RANGE[_FROM]) from them, `server_batch` rows per cursor batch (streamed:
    `hasMore` and POST /_api/cursor/<id>), and GET …/count. The stub's HASH is crc32:
    which keys the sample holds is the server's business, not the store's."""
    kinds = {name: "edge" if docs and "_from" in docs[0] else "document" for name, docs in collections.items()}
    serve_collections(server, **kinds)
    cursors: dict[str, list] = {}
    numbers = itertools.count(100)

    def count(request: Recorded):
        name = request.endpoint.split("/")[3]
        return {"error": False, "code": 200, "id": "1", "name": name, "isSystem": False, "status": 3,
                "type": _TYPES[kinds[name]], "globallyUniqueId": "h" + name, "count": len(collections[name])}

    def rows_of(query: str, bind: dict) -> list:
        docs = sorted(collections[bind["@collection"]], key=lambda d: d["_key"])
        if query == aql.SAMPLE_KEYS:
            return [d["_key"] for d in docs if zlib.crc32(d["_key"].encode()) % bind["every"] == 0]
        chosen = [d for d in docs if d["_key"] >= bind["low"] and ("high" not in bind or d["_key"] < bind["high"])]
        if query in (aql.PULL_EDGE_RANGE, aql.PULL_EDGE_RANGE_FROM):
            return [[d["_from"], d["_to"]] for d in chosen]
        return [{a: d[a] for a in bind["attributes"] if a in d} for d in chosen]

    def batch(cursor_id: str, status: int):
        rows = cursors[cursor_id]
        head, cursors[cursor_id] = rows[:server_batch], rows[server_batch:]
        more = bool(cursors[cursor_id])
        if not more:
            del cursors[cursor_id]
        return cursor_response(head, has_more=more, cursor_id=cursor_id, status=status)

    def create(request: Recorded):
        cursor_id = str(next(numbers))
        cursors[cursor_id] = rows_of(request.body["query"], request.body["bindVars"])
        return batch(cursor_id, 201)

    server.on("get", "/_api/collection/[^/]+/count", count)
    serve_queries(server, {query: create for query in (aql.SAMPLE_KEYS, aql.PULL_KEY_RANGE, aql.PULL_KEY_RANGE_FROM,
                                                        aql.PULL_EDGE_RANGE, aql.PULL_EDGE_RANGE_FROM)})
    server.on("post", "/_api/cursor/[^/]+", lambda request: batch(request.endpoint.split("/")[3], 200))
