"""A database for restores through the harness: collections are created by
POST /_api/collection and listed afterwards, imports count what they took, indexes and
named graphs are recorded (https://docs.arangodb.com/3.12/develop/http-api/)."""

from __future__ import annotations

from graphsvc.store.arango import aql
from tests.store.arango.harness import ArangoStub, Recorded, cursor_response, error_body
from tests.store.arango.routes_store import collection_listing, collection_properties, writing_cursor


class RestoreServer:
    def __init__(self, index_answer=None):
        self.server = ArangoStub()
        self.collections: dict[str, str] = {}  # name → kind
        self.graphs: dict[str, dict] = {}
        server = self.server
        server.on("get", "/_api/collection", lambda r: collection_listing(*self.collections.items()))
        server.on("post", "/_api/collection", self._create_collection)
        server.on("get", "/_api/collection/([^/]+)/properties", self._properties)
        server.on("post", "/_api/import", self._import)
        server.on("post", "/_api/index", index_answer or (lambda r: (201, {
            **r.body, "id": f"{r.params['collection']}/9", "isNewlyCreated": True, "error": False, "code": 201})))
        server.on("get", "/_api/gharial/([^/]+)", lambda r: self.graphs.get(r.endpoint.rsplit("/", 1)[1])
                  or error_body(404, 1924, "graph 'x' not found"))
        server.on("post", "/_api/gharial", self._create_graph)
        answers = {
            aql.GET_STATE: lambda r: cursor_response([]),
            aql.DELETE_STATE: lambda r: writing_cursor([], 0),
            aql.PUT_STATE: lambda r: writing_cursor([], 1),
            aql.BUMP_CHANGE_MARKER: lambda r: writing_cursor([1], 1),
            aql.COUNT_DANGLING_EDGES: lambda r: cursor_response([0]),
        }
        server.on("post", "/_api/cursor", lambda r: answers[r.body["query"]](r))

    def _create_collection(self, request: Recorded):
        body = request.body
        self.collections[body["name"]] = "edge" if body.get("type") == 3 else "document"
        return 200, {**collection_properties(body["name"], self.collections[body["name"]])}

    def _properties(self, request: Recorded):
        name = request.endpoint.split("/")[3]
        if name not in self.collections:
            return error_body(404, 1203, f"collection or view not found: {name}")
        return collection_properties(name, self.collections[name])

    def _import(self, request: Recorded):
        documents = request.body
        return 201, {"error": False, "created": len(documents), "errors": 0, "empty": 0, "updated": 0,
                     "ignored": 0}

    def _create_graph(self, request: Recorded):
        body = request.body
        graph = {"_key": body["name"], "name": body["name"], "edgeDefinitions": body.get("edgeDefinitions", []),
                 "orphanCollections": body.get("orphanCollections", []), "_id": "_graphs/" + body["name"],
                 "_rev": "1"}
        for definition in graph["edgeDefinitions"]:  # gharial creates what the graph names
            self.collections.setdefault(definition["collection"], "edge")
            for name in definition["from"] + definition["to"]:
                self.collections.setdefault(name, "document")
        for name in graph["orphanCollections"]:
            self.collections.setdefault(name, "document")
        self.graphs[body["name"]] = {"error": False, "code": 200, "graph": graph}
        return 202, {"error": False, "code": 202, "graph": graph}
