"""A collection's indexes on the `ArangoStub`, answering as ArangoDB 3.12 documents the
index API (https://docs.arangodb.com/3.12/develop/http-api/indexes/ and …/indexes/vector/):
POST /_api/index?collection=…, GET /_api/index?collection=…[&withHidden=1],
GET /_api/index/<collection>/<id>, DELETE /_api/index/<collection>/<id>; and the cursor
queries the vector index step sends (counts of vectors, example keys).

    indexes = VectorIndexRoutes(server, "products", counts={"documents": 10, "vectors": 10, "other": 0})
    indexes.existing(vector_index("products", 68, dimension=128))
    ... store.create_vector_index(...)
    indexes.created  # the bodies POSTed
"""

from __future__ import annotations

import copy
from typing import Any, Callable

from graphsvc.store.arango import aql
from tests.store.arango.harness import ArangoStub, Recorded, cursor_response, error_body


def vector_index(collection: str, number: int, *, dimension: int = 16, n_lists: int = 60, n_probe: int = 1,
                 sparse: bool = True, training_state: str | None = "ready", error_message: str | None = None,
                 name: str = "vector_embedding", attribute: str = "embedding") -> dict:
    """A vector index description as the server reports it (3.12.9+ with trainingState)."""
    description: dict[str, Any] = {
        "id": f"{collection}/{number}", "name": name, "type": "vector", "fields": [attribute],
        "sparse": sparse, "unique": False, "inBackground": True,
        "params": {"metric": "cosine", "dimension": dimension, "nLists": n_lists, "defaultNProbe": n_probe,
                   "trainingIterations": 25, "numberOfDocsPerCentroid": 256},
    }
    if training_state is not None:
        description["trainingState"] = training_state
    if error_message is not None:
        description["errorMessage"] = error_message
    return description


def primary_index(collection: str) -> dict:
    return {"id": f"{collection}/0", "name": "primary", "type": "primary", "fields": ["_key"], "unique": True,
            "sparse": False, "selectivityEstimate": 1}


class VectorIndexRoutes:
    """The indexes of one collection, kept as the server would while the store creates,
    reads, polls and drops them. `on_create(body)` decides the POST's answer: a
    (status, body) pair, or None for the documented 201 with the new description."""

    def __init__(self, server: ArangoStub, collection: str, *, counts: dict | None = None,
                 problem_keys: list[str] | None = None):
        self.server, self.collection = server, collection
        self.indexes: list[dict] = [primary_index(collection)]
        self.hidden: set[str] = set()  # ids still built in the background
        self.created: list[dict] = []
        self.dropped: list[str] = []
        self.counts = counts or {"documents": 10, "vectors": 10, "other": 0}
        self.problem_keys = problem_keys or []
        self.on_create: Callable[[dict], Any] | None = None
        self.after_create_state: list[str] = []  # trainingState of each later GET by id, in turn
        self._next = 100
        base = f"/_api/index/{collection}/(\\d+)"
        server.on("get", "/_api/index", self._list)
        server.on("post", "/_api/index", self._create)
        server.on("get", base, self._get)
        server.on("delete", base, self._delete)
        server.on("post", "/_api/cursor", self._cursor)

    def existing(self, description: dict, hidden: bool = False) -> dict:
        self.indexes.append(description)
        if hidden:
            self.hidden.add(description["id"])
        return description

    def vector_ids(self) -> list[str]:
        return [i["id"] for i in self.indexes if i["type"] == "vector"]

    # -- routes -------------------------------------------------------------------------------
    def _list(self, request: Recorded):
        assert request.params["collection"] == self.collection
        hidden = request.params.get("withHidden") in ("1", "true")
        shown = [copy.deepcopy(i) for i in self.indexes if hidden or i["id"] not in self.hidden]
        return {"error": False, "code": 200, "indexes": shown, "identifiers": {i["id"]: i for i in shown}}

    def _create(self, request: Recorded):
        assert request.params["collection"] == self.collection
        body = request.body
        self.created.append(body)
        answer = self.on_create(body) if self.on_create else None
        if answer is not None:
            return answer
        for index in self.indexes:
            if index["name"] == body.get("name"):
                same = index["params"] == body["params"] or all(
                    index["params"].get(k) == v for k, v in body["params"].items())
                if not same:
                    return error_body(409, 1005, "duplicate value")  # documented 1005: duplicate identifier
                return 200, {**copy.deepcopy(index), "isNewlyCreated": False, "error": False, "code": 200}
        self._next += 1
        description = vector_index(self.collection, self._next, dimension=body["params"]["dimension"],
                                   n_lists=body["params"]["nLists"], n_probe=body["params"].get("defaultNProbe", 1),
                                   sparse=body.get("sparse", False), name=body["name"],
                                   attribute=body["fields"][0])
        self.indexes.append(description)
        return 201, {**copy.deepcopy(description), "isNewlyCreated": True, "error": False, "code": 201}

    def _find(self, request: Recorded) -> dict | None:
        number = request.endpoint.rsplit("/", 1)[-1]
        return next((i for i in self.indexes if i["id"] == f"{self.collection}/{number}"), None)

    def _get(self, request: Recorded):
        index = self._find(request)
        if index is None:
            return error_body(404, 1212, "index not found")
        if self.after_create_state:
            index["trainingState"] = self.after_create_state.pop(0)
        return {**copy.deepcopy(index), "error": False, "code": 200}

    def _delete(self, request: Recorded):
        index = self._find(request)
        if index is None:
            return error_body(404, 1212, "index not found")
        self.indexes.remove(index)
        self.dropped.append(index["id"])
        return {"id": index["id"], "error": False, "code": 200}

    def _cursor(self, request: Recorded):
        query = request.body["query"]
        if query == aql.VECTOR_COUNTS:
            return cursor_response([self.counts])
        if query == aql.VECTOR_PROBLEM_KEYS:
            return cursor_response(self.problem_keys[: request.body["bindVars"]["examples"]])
        raise AssertionError(f"unexpected query {query}")
