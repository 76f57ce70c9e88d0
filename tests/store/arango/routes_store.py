"""Routes shared by the store tests: what the server answers about collections, cursors
that write, and the change-marker bookkeeping every write ends with. Shapes as the
ArangoDB 3.12 HTTP API documents them."""

from __future__ import annotations

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
