"""The real ArangoStore through the request harness, flow by flow: the exact requests it
sends (method, endpoint, query parameters, body), each also checked against ArangoDB
3.12's published HTTP API (tests/store/arango/schemas, by the harness and conftest.py).

Answers are shaped as the manual's examples (https://docs.arangodb.com/3.12/develop/http-api/).
Where issue 13 changed a request, the test names the point ("issue 13 point N"); the
detailed tests of those points are in test_vector_index.py, test_filters.py,
test_connection.py, test_writes.py and tests/jobs/test_restore_fidelity.py.
"""

from __future__ import annotations

import pyarrow as pa
import pytest
from requests.exceptions import ReadTimeout

from graphsvc.errors import ArangoError, CollectionNotFound, DocumentNotFound, StoreError
from graphsvc.store.arango import aql
from graphsvc.store.arango.connection import CURSOR_BATCH_SIZE, CURSOR_TTL
from graphsvc.store.arango.state import STATE_COLLECTION
from graphsvc.store.arango.vector_index import default_n_lists
from graphsvc.store.base import Condition, EdgeDefinition, GraphInfo, StoreAddress
from tests.store.arango.harness import ArangoStub, cursor_response, error_body, raises
from tests.store.arango.routes_store import serve_key_ranges, writing_cursor
from tests.store.arango.routes_vector import VectorIndexRoutes

KINDS = {2: "document", 3: "edge"}


def _collection_entry(name: str, type_: int) -> dict:
    # GET /_api/collection (collections/#list-all-collections)
    return {"id": str(abs(hash(name)) % 10_000), "name": name, "isSystem": name.startswith("_"), "status": 3,
            "type": type_, "globallyUniqueId": "h" + name}


def database(server: ArangoStub, collections: dict[str, int], counts: dict[str, int] | None = None,
             state: bool = False) -> None:
    """Routes for a database holding `collections` (name → type 2/3), and the state
    collection when `state`; other collections answer 404 / 1203 as the server does."""
    known = dict(collections)
    if state:
        known[STATE_COLLECTION] = 2
    counts = counts or {}

    def listing(_request):
        return {"error": False, "code": 200,
                "result": [_collection_entry(n, t) for n, t in known.items()] + [_collection_entry("_graphs", 2)]}

    def one(suffix):
        def answer(request):
            name = request.endpoint.split("/")[3]
            if name not in known:
                return error_body(404, 1203, f"collection or view not found: {name}")
            body = {"error": False, "code": 200, **_collection_entry(name, known[name])}
            if suffix == "properties":  # collections/#get-the-properties-of-a-collection
                body.update({"waitForSync": False, "keyOptions": {"type": "traditional", "allowUserKeys": True},
                             "writeConcern": 1, "cacheEnabled": False, "computedValues": None, "schema": None})
            if suffix == "count":
                body["count"] = counts.get(name, 0)
            return body
        return answer

    def create(request):  # collections/#create-a-collection
        known[request.body["name"]] = request.body["type"]
        return {"error": False, "code": 200, **_collection_entry(request.body["name"], request.body["type"])}

    server.on("get", "/_api/collection", listing)
    server.on("post", "/_api/collection", create)
    server.on("get", "/_api/collection/[^/]+/properties", one("properties"))
    server.on("get", "/_api/collection/[^/]+/count", one("count"))


def imported(request) -> dict:
    """POST /_api/import's answer (import/#import-json-data-as-documents)."""
    return {"error": False, "created": len(request.body), "errors": 0, "empty": 0, "updated": 0, "ignored": 0,
            "details": []}


def cursor_body(query: str, bind_vars: dict, stream: bool = False) -> dict:
    """A cursor request as the store sends it through python-arango 8.x: `count` and
    `memoryLimit` (0: none) always, every option both under `options` and (python-arango's
    copy) at the top level; `allowRetry` false always."""
    options = {"stream": True, "allowRetry": False} if stream else {"allowRetry": False}
    body = {"query": query, "count": False, "batchSize": CURSOR_BATCH_SIZE, "bindVars": bind_vars, "memoryLimit": 0,
            "options": options, **options}
    if stream:
        body["ttl"] = CURSOR_TTL
    return body


def answers(server: ArangoStub, by_query: dict[str, list]) -> None:
    """POST /_api/cursor answered per AQL text (one batch each)."""
    server.on("post", "/_api/cursor", lambda r: cursor_response(by_query[r.body["query"]]))


# -- restore: collections, import batches, indexes, graphs ----------------------------------------
def test_create_collection_sends_the_documented_body_for_document_and_edge_collections():
    server = ArangoStub()
    database(server, {})
    store = server.store()
    store.create_collection("products")
    store.create_collection("bought", "edge")
    # issue 13 point 10: a dump's properties travel along, less what the server only reports
    store.create_collection("orders", properties={
        "id": "12", "globallyUniqueId": "h12", "keyOptions": {"type": "autoincrement", "allowUserKeys": False,
                                                               "increment": 5, "offset": 10, "lastValue": 95},
        "shardKeys": ["sku"], "numberOfShards": 3, "replicationFactor": 2, "writeConcern": 2,
        "schema": {"rule": {"type": "object"}, "level": "moderate", "message": "no", "type": "json"},
        "computedValues": None, "cacheEnabled": False})
    bodies = [r.body for r in server.sent("post", "/_api/collection")]
    assert bodies == [
        {"name": "products", "waitForSync": False, "isSystem": False,
         "keyOptions": {"type": "traditional", "allowUserKeys": True}, "type": 2},
        {"name": "bought", "waitForSync": False, "isSystem": False,
         "keyOptions": {"type": "traditional", "allowUserKeys": True}, "type": 3},
        {"name": "orders", "waitForSync": False, "isSystem": False, "type": 2,
         "keyOptions": {"type": "autoincrement", "allowUserKeys": False, "increment": 5, "offset": 10},
         "shardKeys": ["sku"], "numberOfShards": 3, "replicationFactor": 2, "writeConcern": 2,
         "schema": {"rule": {"type": "object"}, "level": "moderate", "message": "no"}},
    ]
    assert [r.params for r in server.sent("post", "/_api/collection")] == [{}, {}, {}]


def test_a_collection_made_meanwhile_by_another_process_is_taken_not_an_error():
    server = ArangoStub()
    database(server, {})
    server.on("get", "/_api/collection", {"error": False, "code": 200, "result": []})
    server.on("post", "/_api/collection", error_body(409, 1207, "duplicate name"))
    server.on("get", "/_api/collection/products/properties",
              {"error": False, "code": 200, **_collection_entry("products", 2)})
    server.on("get", "/_api/collection/products/count",
              {"error": False, "code": 200, **_collection_entry("products", 2), "count": 7})
    info = server.store().create_collection("products")
    assert (info.name, info.kind, info.count) == ("products", "document", 7)


def test_upserts_go_to_the_import_api_in_batches_all_or_nothing_then_bump_the_change_marker():
    server = ArangoStub()
    database(server, {"products": 2}, state=True)
    server.on("post", "/_api/import", imported)
    answers(server, {aql.BUMP_CHANGE_MARKER: [1]})
    store = server.store(import_batch_size=2)
    written = store.upsert_table("products", pa.table({"_key": ["a", "b", "c"], "price": [1.5, None, 3.0]}))
    assert written == 3
    imports = server.sent("post", "/_api/import")
    # complete=true: all-or-nothing on a single server only (issue 13 point 12 changed the store's comment)
    assert [r.params for r in imports] == [
        {"type": "array", "collection": "products", "complete": "1", "details": "1", "onDuplicate": "replace"}] * 2
    assert [r.body for r in imports] == [[{"_key": "a", "price": 1.5}, {"_key": "b"}], [{"_key": "c", "price": 3.0}]]
    assert server.sent("post", "/_api/cursor")[-1].body == cursor_body(
        aql.BUMP_CHANGE_MARKER, {"@collection": STATE_COLLECTION, "key": "m:products", "name": "products"})


def test_an_import_the_server_rejects_in_part_names_the_collection_and_the_details():
    server = ArangoStub()
    database(server, {"products": 2})
    server.on("post", "/_api/import", {"error": False, "created": 0, "errors": 1, "empty": 0, "updated": 0,
                                        "ignored": 0, "details": ["at position 0: illegal document key"]})
    with pytest.raises(StoreError, match="rejected 1 document.*'products'.*illegal document key"):
        server.store().upsert_documents("products", [{"_key": "a", "x": 1}])


def test_an_index_from_a_dump_is_sent_without_the_attributes_the_server_only_reports():
    server = ArangoStub()
    database(server, {"products": 2})
    server.on("post", "/_api/index", lambda r: (201, {**r.body, "id": "products/7", "isNewlyCreated": True,
                                                      "error": False, "code": 201}))
    store = server.store()
    outcome = store.create_index("products", {
        "id": "7", "type": "hash", "fields": ["category"], "unique": False, "sparse": False,
        "selectivityEstimate": 0.5, "deduplicate": True, "estimates": True, "name": "idx_category"})
    assert outcome.status == "created"
    [sent] = server.sent("post", "/_api/index")
    assert sent.params == {"collection": "products"}
    assert sent.body == {"type": "persistent", "fields": ["category"], "unique": False, "sparse": False,
                         "deduplicate": True, "estimates": True, "name": "idx_category"}


def test_a_unique_index_failing_on_duplicates_is_reported_failed_naming_the_fields():
    """Issue 13 point 10: 409/1210 is a failure of the restore, not a skip."""
    server = ArangoStub()
    database(server, {"products": 2})
    server.on("post", "/_api/index", error_body(409, 1210, "unique constraint violated"))
    outcome = server.store().create_index("products", {"type": "persistent", "fields": ["sku"], "unique": True})
    assert outcome.status == "failed" and "'products' holds documents with the same sku" in outcome.reason
    [sent] = server.sent("post", "/_api/index")
    assert (sent.params, sent.body) == ({"collection": "products"},
                                        {"type": "persistent", "fields": ["sku"], "unique": True})


def _graph_document(name: str, definitions: list[dict], orphans: list[str] = ()) -> dict:
    # GET /_api/gharial/{graph} (graphs/named-graphs/#get-a-graph)
    return {"_key": name, "_id": f"_graphs/{name}", "_rev": "_a1", "name": name, "edgeDefinitions": definitions,
            "orphanCollections": list(orphans), "numberOfShards": 1, "replicationFactor": 1, "isSmart": False}


def test_a_new_named_graph_is_created_with_its_edge_definitions_and_orphan_collections():
    server = ArangoStub()
    database(server, {"products": 2, "bought": 3, "users": 2})
    server.on("get", "/_api/gharial/shop", error_body(404, 1924, "graph 'shop' not found"))
    server.on("post", "/_api/gharial", lambda r: (202, {"error": False, "code": 202, "graph": _graph_document(
        "shop", r.body["edgeDefinitions"], r.body["orphanCollections"])}))
    server.store().create_graph(GraphInfo("shop", (EdgeDefinition("bought", ("products",), ("products",)),),
                                          orphan_collections=("users",)))
    [sent] = server.sent("post", "/_api/gharial")
    # issue 13 point 10: the dump's orphanCollections are kept
    assert (sent.params, sent.body) == ({}, {
        "name": "shop", "options": {}, "orphanCollections": ["users"],
        "edgeDefinitions": [{"collection": "bought", "from": ["products"], "to": ["products"]}]})


def test_an_existing_named_graph_gets_its_edge_definitions_replaced_added_and_dropped():
    server = ArangoStub()
    database(server, {"products": 2, "bought": 3, "viewed": 3, "old": 3})
    current = _graph_document("shop", [{"collection": "bought", "from": ["products"], "to": ["products"]},
                                       {"collection": "old", "from": ["products"], "to": ["products"]}])
    server.on("get", "/_api/gharial/shop", {"error": False, "code": 200, "graph": current})
    server.on("put", "/_api/gharial/shop/edge/bought", (202, {"error": False, "code": 202, "graph": current}))
    server.on("post", "/_api/gharial/shop/edge", (202, {"error": False, "code": 202, "graph": current}))
    server.on("delete", "/_api/gharial/shop/edge/old", (202, {"error": False, "code": 202, "graph": current}))
    # GET /_api/gharial/{graph}/vertex (graphs/named-graphs/#list-node-collections), after the changes above
    server.on("get", "/_api/gharial/shop/vertex", {"error": False, "code": 200,
                                                   "collections": ["products", "viewed", "users"]})
    server.on("post", "/_api/gharial/shop/vertex", (202, {"error": False, "code": 202, "graph": current}))
    server.store().create_graph(GraphInfo("shop", (
        EdgeDefinition("bought", ("products",), ("products", "viewed")),
        EdgeDefinition("viewed", ("products",), ("products",)),
    ), orphan_collections=("users", "tags")))
    changes = [(r.method, r.endpoint, r.params, r.body) for r in server.requests if r.method != "get"]
    assert changes == [
        ("put", "/_api/gharial/shop/edge/bought", {},  # purge: python-arango's, see harness._as_documented
         {"collection": "bought", "from": ["products"], "to": ["products", "viewed"], "purge": False}),
        ("post", "/_api/gharial/shop/edge", {}, {"collection": "viewed", "from": ["products"], "to": ["products"]}),
        ("delete", "/_api/gharial/shop/edge/old", {"dropCollections": "0"}, None),
        # issue 13 point 10: an orphan collection the graph lacks is added (users is one already)
        ("post", "/_api/gharial/shop/vertex", {}, {"collection": "tags"}),
    ]
    assert [(r.endpoint, r.params) for r in server.sent("get", "/_api/gharial/.*")] == [
        ("/_api/gharial/shop", {}), ("/_api/gharial/shop", {}), ("/_api/gharial/shop/vertex", {})]


def test_graphs_are_listed_from_gharial():
    server = ArangoStub()
    database(server, {})
    server.on("get", "/_api/gharial", {"error": False, "code": 200, "graphs": [
        _graph_document("shop", [{"collection": "bought", "from": ["products"], "to": ["products"]}])]})
    [graph] = server.store().graphs()
    assert graph == GraphInfo("shop", (EdgeDefinition("bought", ("products",), ("products",)),))


# -- pull -------------------------------------------------------------------------------------------
def test_pull_streams_one_cursor_and_fetches_the_next_batches_until_the_server_says_done():
    server = ArangoStub()
    database(server, {"products": 2})
    server.on("post", "/_api/cursor", cursor_response([{"_key": "a", "price": 1.0}, {"_key": "b"}],
                                                      has_more=True, cursor_id="77"))
    server.on("post", "/_api/cursor/77", cursor_response([{"_key": "c", "price": 3.0}], status=200))
    table = pa.Table.from_batches(list(server.store().pull("products", {"price": pa.float64()})))
    assert table.to_pylist() == [{"_key": "a", "price": 1.0}, {"_key": "b", "price": None},
                                 {"_key": "c", "price": 3.0}]
    [first] = server.sent("post", "/_api/cursor")
    assert first.body == cursor_body(aql.PULL_ATTRIBUTES, {"@collection": "products", "attributes": ["_key", "price"]},
                                     stream=True)
    assert [(r.endpoint, r.body) for r in server.sent("post", "/_api/cursor/.*")] == [("/_api/cursor/77", None)]
    assert server.sent("delete") == []  # a drained cursor is gone on the server already


@pytest.mark.parametrize("method, query, rows, expected", [
    ("pull_edges", aql.PULL_EDGES, [["products/a", "products/b"]], [{"_from": "products/a", "_to": "products/b"}]),
    ("pull_revisions", aql.PULL_REVISIONS, [["a", "_r1"]], [{"_key": "a", "_rev": "_r1"}]),
])
def test_edges_and_revisions_are_pulled_through_their_own_streaming_query(method, query, rows, expected):
    server = ArangoStub()
    database(server, {"bought": 3})
    answers(server, {query: rows})
    table = pa.Table.from_batches(list(getattr(server.store(), method)("bought")))
    assert table.to_pylist() == expected
    assert server.sent("post", "/_api/cursor")[0].body == cursor_body(query, {"@collection": "bought"}, stream=True)


def test_a_pull_abandoned_half_way_closes_its_server_cursor():
    server = ArangoStub()
    database(server, {"products": 2})
    server.on("post", "/_api/cursor", cursor_response([{"_key": "a"}], has_more=True, cursor_id="9"))
    server.on("delete", "/_api/cursor/9", (202, {"id": "9", "error": False, "code": 202}))
    batches = server.store().pull("products", {}, batch_size=1)
    next(batches)
    batches.close()
    assert [(r.method, r.endpoint, r.body) for r in server.sent(endpoint="/_api/cursor/.*")] == [
        ("delete", "/_api/cursor/9", None)]


def test_a_cursor_that_expired_between_batches_is_an_arango_error_naming_the_collection():
    server = ArangoStub()
    database(server, {"products": 2})
    server.on("post", "/_api/cursor", cursor_response([{"_key": "a"}], has_more=True, cursor_id="5"))
    server.on("post", "/_api/cursor/5", error_body(404, 1600, "cursor not found"))
    server.on("delete", "/_api/cursor/5", error_body(404, 1600, "cursor not found"))
    with pytest.raises(ArangoError, match="cursor not found") as caught:
        list(server.store().pull("products", {}))
    assert caught.value.error_code == 1600


# -- pulls by key range (issue 14: a read task per range) ----------------------------------------------
RANGE_DOCUMENTS = [{"_key": f"p{i:03d}", "price": float(i)} for i in range(120)]
RANGE_EDGES = [{"_key": f"e{i:03d}", "_from": f"products/p{i:03d}", "_to": f"products/p{(i + 1) % 120:03d}"}
               for i in range(60)]


def test_key_ranges_come_from_a_sorted_sample_and_each_range_is_one_streaming_cursor_in_key_order():
    server = ArangoStub()
    serve_key_ranges(server, {"products": RANGE_DOCUMENTS, "bought": RANGE_EDGES}, server_batch=25)
    store = server.store()
    ranges = store.key_ranges("products", 3)
    [sample] = [r for r in server.sent("post", "/_api/cursor") if r.body["query"] == aql.SAMPLE_KEYS]
    # 120 documents, 3 ranges of 64 samples each wanted: every key is a candidate
    assert sample.body == cursor_body(aql.SAMPLE_KEYS, {"@collection": "products", "every": 1})
    assert len(ranges) == 3 and ranges[0][0] is None and ranges[-1][1] is None
    server.requests.clear()
    pieces = [pa.Table.from_batches(list(store.pull_range("products", {"price": pa.float64()}, key_range,
                                                          batch_size=30))).to_pylist() for key_range in ranges]
    assert [row for piece in pieces for row in piece] == RANGE_DOCUMENTS
    opened = server.sent("post", "/_api/cursor")
    assert [r.body for r in opened] == [
        cursor_body(aql.PULL_KEY_RANGE, {"@collection": "products", "attributes": ["_key", "price"], "low": "",
                                         "high": ranges[0][1]}, stream=True),
        cursor_body(aql.PULL_KEY_RANGE, {"@collection": "products", "attributes": ["_key", "price"],
                                         "low": ranges[1][0], "high": ranges[1][1]}, stream=True),
        cursor_body(aql.PULL_KEY_RANGE_FROM, {"@collection": "products", "attributes": ["_key", "price"],
                                              "low": ranges[2][0]}, stream=True)]
    # 40 rows a range in server batches of 25: one more batch fetched per range
    assert len(server.sent("post", "/_api/cursor/[0-9]+")) == 3


def test_edge_ranges_are_streamed_by_edge_key_and_hold_each_edge_once():
    server = ArangoStub()
    serve_key_ranges(server, {"products": RANGE_DOCUMENTS, "bought": RANGE_EDGES})
    store = server.store()
    ranges = store.key_ranges("bought", 2)
    edges = [(row["_from"], row["_to"]) for key_range in ranges
             for batch in store.pull_edges_range("bought", key_range) for row in batch.to_pylist()]
    assert edges == [(e["_from"], e["_to"]) for e in RANGE_EDGES]
    queries = [r.body["query"] for r in server.sent("post", "/_api/cursor")]
    assert queries == [aql.SAMPLE_KEYS, aql.PULL_EDGE_RANGE, aql.PULL_EDGE_RANGE_FROM]
    assert all(r.body["options"]["stream"] for r in server.sent("post", "/_api/cursor")[1:])
    with pytest.raises(StoreError, match="not an edge collection"):
        store.pull_edges_range("products", (None, None))


def test_a_small_collection_or_one_part_is_one_open_range_and_the_address_names_every_coordinator():
    server = ArangoStub()
    serve_key_ranges(server, {"products": RANGE_DOCUMENTS[:1]})
    store = server.store("arangodb://root@h1:8529,h2:8529/graphsvc", password_file=None)
    assert store.key_ranges("products", 4) == [(None, None)]
    assert store.key_ranges("products", 1) == [(None, None)]
    assert server.sent("post", "/_api/cursor") == []  # no sample needed
    assert store.address() == StoreAddress("arangodb://root@h1:8529,h2:8529/graphsvc", None, coordinators=2)


# -- write-back, removals -----------------------------------------------------------------------------
def test_write_back_checks_every_key_then_updates_each_chunk_in_one_query():
    server = ArangoStub()
    database(server, {"products": 2}, state=True)
    written = {aql.FIRST_MISSING_KEY: cursor_response([]), aql.UPDATE_ATTRIBUTES: writing_cursor([], 2),
               aql.BUMP_CHANGE_MARKER: cursor_response([2])}
    server.on("post", "/_api/cursor", lambda r: written[r.body["query"]])
    store = server.store()
    updated = store.update_attributes("products", pa.table({"_key": ["a", "b"], "rank": [1, None]}))
    assert updated == 2  # the server's writesExecuted
    assert [r.body for r in server.sent("post", "/_api/cursor")] == [
        cursor_body(aql.FIRST_MISSING_KEY, {"@collection": "products", "keys": ["a", "b"]}),
        # issue 13 point 7: b's null is sent, and keepNull: false clears the attribute, as on the embedded store
        cursor_body(aql.UPDATE_ATTRIBUTES, {"@collection": "products", "rows": [{"_key": "a", "rank": 1},
                                                                                 {"_key": "b", "rank": None}]}),
        cursor_body(aql.BUMP_CHANGE_MARKER, {"@collection": STATE_COLLECTION, "key": "m:products",
                                             "name": "products"}),
    ]


def test_write_back_to_a_missing_key_names_it_and_sends_no_update():
    server = ArangoStub()
    database(server, {"products": 2}, state=True)
    answers(server, {aql.FIRST_MISSING_KEY: ["zz"]})
    with pytest.raises(DocumentNotFound, match="zz"):
        server.store().update_attributes("products", pa.table({"_key": ["a", "zz"], "rank": [1, 2]}))
    assert server.queries() == [aql.FIRST_MISSING_KEY]


def test_remove_documents_sends_the_keys_once_each_and_counts_what_existed():
    server = ArangoStub()
    database(server, {"products": 2}, state=True)
    answers(server, {aql.REMOVE_DOCUMENTS: [True], aql.BUMP_CHANGE_MARKER: [3]})
    assert server.store().remove_documents("products", ["a", "b", "a"]) == 1
    assert server.sent("post", "/_api/cursor")[0].body == cursor_body(
        aql.REMOVE_DOCUMENTS, {"@collection": "products", "keys": ["a", "b"]})


# -- reads by key and by filter ----------------------------------------------------------------------
def test_get_documents_asks_for_the_distinct_keys_and_answers_in_the_callers_order():
    server = ArangoStub()
    database(server, {"products": 2})
    answers(server, {aql.GET_DOCUMENTS: [{"_key": "b", "_id": "products/b", "_rev": "1", "x": 2}],
                     aql.GET_DOCUMENT_ATTRIBUTES: [{"_key": "a", "_id": "products/a", "_rev": "1", "x": 1}]})
    store = server.store()
    assert store.get_documents("products", ["a", "b", "a"]) == [None, {"_key": "b", "_id": "products/b",
                                                                       "_rev": "1", "x": 2}, None]
    assert store.get_documents("products", ["a"], attributes=["x"])[0]["x"] == 1
    assert [r.body for r in server.sent("post", "/_api/cursor")] == [
        cursor_body(aql.GET_DOCUMENTS, {"@collection": "products", "keys": ["a", "b"]}),
        cursor_body(aql.GET_DOCUMENT_ATTRIBUTES, {"@collection": "products", "keys": ["a"],
                                                  "attributes": ["_key", "_id", "_rev", "_from", "_to", "x"]}),
    ]


def test_select_keys_binds_each_attribute_name_and_value():
    server = ArangoStub()
    database(server, {"products": 2})
    server.on("post", "/_api/cursor", cursor_response(["a"]))
    store = server.store()
    assert store.select_keys("products") == ["a"]
    assert store.select_keys("products", {"category": "books", "in_stock": True}) == ["a"]
    assert [r.body for r in server.sent("post", "/_api/cursor")] == [
        cursor_body(aql.select_keys_query(0), {"@collection": "products"}),
        cursor_body(aql.select_keys_query(2), {"@collection": "products", "attr_0": "category", "value_0": "books",
                                               "attr_1": "in_stock", "value_1": True}),
    ]


def test_filter_keys_sends_one_fixed_line_per_operator_with_everything_bound():
    server = ArangoStub()
    database(server, {"products": 2})
    server.on("post", "/_api/cursor", cursor_response(["a"]))
    conditions = [Condition("price", "lt", 20), Condition("category", "in", ["books", "music"])]
    assert server.store().filter_keys("products", conditions) == ["a"]
    assert server.sent("post", "/_api/cursor")[0].body == cursor_body(
        aql.filter_keys_query(["lt", "in"]),
        {"@collection": "products", "attr_0": "price", "value_0": 20, "attr_1": "category",
         "value_1": ["books", "music"]})


def test_dangling_edges_are_counted_then_examples_fetched_against_the_existing_collections():
    server = ArangoStub()
    database(server, {"products": 2, "bought": 3})
    example = {"_key": "e1", "_from": "products/a", "_to": "gone/x"}
    answers(server, {aql.COUNT_DANGLING_EDGES: [4], aql.DANGLING_EDGE_EXAMPLES: [example]})
    dangling = server.store().dangling_edges("bought", examples=2)
    assert (dangling.count, dangling.examples) == (4, (example,))
    existing = ["products", "bought", "_graphs"]
    assert [r.body for r in server.sent("post", "/_api/cursor")] == [
        cursor_body(aql.COUNT_DANGLING_EDGES, {"@collection": "bought", "existing": existing}),
        cursor_body(aql.DANGLING_EDGE_EXAMPLES, {"@collection": "bought", "existing": existing, "examples": 2}),
    ]


# -- job state and change markers ------------------------------------------------------------------------
def test_job_state_is_put_read_and_deleted_in_the_state_collection_it_creates_on_first_write():
    server = ArangoStub()
    database(server, {"products": 2})
    answers(server, {aql.PUT_STATE: [], aql.GET_STATE: [{"done": 3}], aql.DELETE_STATE: []})
    store = server.store()
    store.put_state("embed/products", {"done": 3})
    assert store.get_state("embed/products") == {"done": 3}
    store.delete_state("embed/products")
    assert [r.body["name"] for r in server.sent("post", "/_api/collection")] == [STATE_COLLECTION]
    key = server.sent("post", "/_api/cursor")[0].body["bindVars"]["key"]
    assert key.startswith("h:")  # "/" is not a key character: hashed
    assert [r.body for r in server.sent("post", "/_api/cursor")] == [
        cursor_body(aql.PUT_STATE, {"@collection": STATE_COLLECTION, "key": key, "name": "embed/products",
                                    "value": {"done": 3}}),
        cursor_body(aql.GET_STATE, {"@collection": STATE_COLLECTION, "key": key}),
        cursor_body(aql.DELETE_STATE, {"@collection": STATE_COLLECTION, "key": key}),
    ]


def test_reading_state_or_a_marker_never_creates_the_state_collection():
    server = ArangoStub()
    database(server, {"products": 2})
    store = server.store()
    assert store.get_state("k") is None
    assert store.change_marker("products") == 0
    assert server.sent("post") == []


def test_the_change_marker_is_read_from_the_state_collection():
    server = ArangoStub()
    database(server, {"products": 2}, state=True)
    answers(server, {aql.GET_CHANGE_MARKER: [5]})
    assert server.store().change_marker("products") == 5
    assert server.sent("post", "/_api/cursor")[0].body == cursor_body(
        aql.GET_CHANGE_MARKER, {"@collection": STATE_COLLECTION, "key": "m:products"})


def test_a_racing_marker_bump_is_retried():
    server = ArangoStub()
    database(server, {"products": 2}, state=True)
    server.on("post", "/_api/import", imported)
    tries = iter([error_body(409, 1200, "write-write conflict"), cursor_response([2])])
    server.on("post", "/_api/cursor", lambda r: next(tries))
    server.store().upsert_documents("products", [{"_key": "a"}])
    assert server.queries() == [aql.BUMP_CHANGE_MARKER, aql.BUMP_CHANGE_MARKER]


# -- vector index and the similarity AQL -------------------------------------------------------------
def _vector_server(version: str = "3.12.6", documents: int = 450, vectors: int = 400) -> tuple[ArangoStub,
                                                                                               VectorIndexRoutes]:
    """products with `vectors` of its `documents` holding an embedding, its indexes kept by
    routes_vector (POST/GET/DELETE /_api/index, the VECTOR_COUNTS / VECTOR_PROBLEM_KEYS cursors)."""
    server = ArangoStub(version=version)
    database(server, {"products": 2}, counts={"products": documents})
    routes = VectorIndexRoutes(server, "products", counts={"documents": documents, "vectors": vectors, "other": 0},
                               problem_keys=["m1", "m2"])
    return server, routes


def _vector_counts_body(dimension: int) -> dict:
    return cursor_body(aql.VECTOR_COUNTS, {"@collection": "products", "attribute": "embedding",
                                           "dimension": dimension})


def test_the_vector_index_requests():
    """Issue 13 points 1 (sparse, nLists = 15·√ documents with a vector), 4 (defaultNProbe:
    1/16 of the cells without a calibration), 11 (inBackground; answered "ready", so no polling)."""
    server, _routes = _vector_server()
    outcome = server.store().create_vector_index("products", dimension=64)
    assert (outcome.status, outcome.n_lists, outcome.default_n_probe) == ("created", default_n_lists(400), 19)
    assert [(r.method, r.endpoint, r.params, r.body) for r in server.requests[1:]] == [
        ("get", "/_api/version", {"details": "0"}, None),
        ("post", "/_api/cursor", {}, _vector_counts_body(64)),
        ("get", "/_api/index", {"collection": "products", "withHidden": "1"}, None),
        ("post", "/_api/index", {"collection": "products"},
         {"type": "vector", "name": "vector_embedding", "fields": ["embedding"], "inBackground": True,
          "sparse": True, "params": {"metric": "cosine", "dimension": 64, "nLists": 300, "defaultNProbe": 19}}),
    ]


def test_on_3_12_5_documents_without_a_vector_are_named_and_no_index_request_is_sent():
    """Issue 13 point 1: no sparse vector index before 3.12.6, so the job refuses up front."""
    server, _routes = _vector_server("3.12.5")
    with pytest.raises(StoreError, match=r"50 documents of 'products' have no 'embedding' \(e\.g\. m1, m2\)"):
        server.store().create_vector_index("products", dimension=64)
    assert [(r.method, r.endpoint, r.body) for r in server.requests[1:]] == [
        ("get", "/_api/version", None),
        ("post", "/_api/cursor", _vector_counts_body(64)),
        ("post", "/_api/cursor", cursor_body(aql.VECTOR_PROBLEM_KEYS, {
            "@collection": "products", "attribute": "embedding", "dimension": 64, "missing": True, "examples": 5})),
    ]


def test_an_index_of_that_name_made_meanwhile_1005_is_reported_as_a_name_clash():
    """Issue 13 point 2: 1005 (duplicate identifier) used to be reported as a missing
    --vector-index startup option."""
    server, routes = _vector_server()
    routes.on_create = lambda body: error_body(409, 1005, "duplicate value")
    with pytest.raises(StoreError, match="another index named 'vector_embedding' on 'products' has a different "
                                         r"definition \(ArangoDB error 1005") as caught:
        server.store().create_vector_index("products", dimension=64)
    assert "--vector-index" not in str(caught.value)
    assert len(server.sent("post", "/_api/index")) == 1


def test_a_vector_index_build_that_times_out_is_looked_for_not_reported_as_not_reachable():
    """Issue 13 point 11: after a timed-out create the store looks for the index (by name,
    then among the hidden ones still building) instead of calling the server unreachable."""
    server, routes = _vector_server()
    routes.on_create = raises(ReadTimeout("Read timed out. (read timeout=600)"))
    with pytest.raises(StoreError, match="the server holds no vector index 'vector_embedding' on 'products' after "
                                         "the request building it timed out") as caught:
        server.store().create_vector_index("products", dimension=64, timeout=0, poll_interval=0)
    assert "not reachable" not in str(caught.value)
    assert [(r.method, r.endpoint, r.params) for r in server.requests[-3:]] == [
        ("post", "/_api/index", {"collection": "products"}),
        ("get", "/_api/index", {"collection": "products"}),  # python-arango sends no withHidden=false
        ("get", "/_api/index", {"collection": "products", "withHidden": "1"}),
    ]


def test_a_server_older_than_3_12_4_gets_no_vector_index_request():
    server, _routes = _vector_server("3.12.3")
    with pytest.raises(StoreError, match="3.12.3.*3.12.4 or later"):
        server.store().create_vector_index("products", dimension=64)
    assert server.sent("post", "/_api/index") == []


@pytest.mark.parametrize("conditions, excluding, n_probe, bound", [
    ((), None, None, {}),
    ((), "a", 24, {"key": "a", "limit": 6, "n_probe": 24}),
    # issue 13 point 3: the conditions as one FILTER (a) AND (b); point 4: nProbe in the function's options
    ((Condition("price", "lt", 20), Condition("category", "eq", "books")), None, 24,
     {"attr_0": "price", "value_0": 20, "attr_1": "category", "value_1": "books", "n_probe": 24}),
    ((Condition("category", "in", ["books"]),), "a", None,
     {"attr_0": "category", "value_0": ["books"], "key": "a", "limit": 6}),
])
def test_vector_search_sends_the_approx_near_cosine_query_with_everything_bound(conditions, excluding, n_probe,
                                                                                bound):
    server, _routes = _vector_server()
    server.on("post", "/_api/cursor", cursor_response([{"_key": "b", "score": 0.9}]))
    hits = server.store().vector_search("products", [0.1, 0.2], 5, conditions, excluding_key=excluding,
                                        n_probe=n_probe)
    assert hits == [("b", 0.9)]
    text = aql.approx_near_cosine_filtered_query([c.op for c in conditions], excluding is not None,
                                                 n_probe=n_probe is not None)
    [sent] = server.sent("post", "/_api/cursor")
    assert sent.body == cursor_body(text, {"@collection": "products", "attribute": "embedding", "k": 5,
                                           "query_vector": [0.1, 0.2], **bound})
    inner = text.split("SORT")[0]
    assert inner.count("FILTER") == (1 if conditions else 0)
    assert ("{ nProbe: @n_probe }" in text) is (n_probe is not None)


def test_a_filtered_vector_search_on_3_12_5_is_refused_before_any_query():
    """Issue 13 point 3: 3.12.4–3.12.5 answer a filter inside the vector search with 1554."""
    server, _routes = _vector_server("3.12.5")
    with pytest.raises(StoreError, match=r"ArangoDB 3\.12\.5 cannot filter inside a vector search on 'products' "
                                         r"\(error 1554 there\).*3\.12\.6 or later"):
        server.store().vector_search("products", [0.1], 5, [Condition("price", "lt", 20)])
    assert server.sent("post", "/_api/cursor") == []


def test_a_vector_search_the_server_answers_1554_says_to_build_the_index():
    server, _routes = _vector_server("3.12.4")
    server.on("post", "/_api/cursor", error_body(400, 1554, "AQL: vector search not applied"))
    with pytest.raises(StoreError, match=r"did not use a vector index for APPROX_NEAR_COSINE on 'products' "
                                         r"\(error 1554\)") as caught:
        server.store().vector_search("products", [0.1], 5)
    assert caught.value.__cause__.error_code == 1554
    [sent] = server.sent("post", "/_api/cursor")
    assert sent.body == cursor_body(aql.approx_near_cosine_filtered_query([], False, n_probe=False), {
        "@collection": "products", "attribute": "embedding", "k": 5, "query_vector": [0.1]})


# -- opening, --create-database, errors ---------------------------------------------------------------------
def _opening(server: ArangoStub, first_answer) -> None:
    """GET /_api/collection (python-arango's verify) answers `first_answer` in the target
    database until the database was created through _system."""
    created = []

    def verify(request):
        if request.database == "_system" or created:
            return {"error": False, "code": 200, "result": []}
        return first_answer

    server.on("get", "/_api/collection", verify)
    server.on("get", "/_api/database", lambda r: {"error": False, "code": 200, "result": ["_system", *created]})

    def create(request):
        created.append(request.body["name"])
        return 201, {"error": False, "code": 201, "result": True}

    server.on("post", "/_api/database", create)


def test_create_database_creates_a_missing_database_through_system():
    server = ArangoStub()
    _opening(server, error_body(404, 1228, "database not found"))
    server.store(create=True)
    assert [(r.method, r.database, r.endpoint, r.body) for r in server.requests] == [
        ("get", "graphsvc", "/_api/collection", None),
        ("get", "_system", "/_api/database", None),
        ("post", "_system", "/_api/database", {"name": "graphsvc"}),
        ("get", "graphsvc", "/_api/collection", None),
    ]


def test_without_create_database_a_missing_database_says_how_to_create_it():
    server = ArangoStub()
    _opening(server, error_body(404, 1228, "database not found"))
    with pytest.raises(ArangoError, match="database 'graphsvc' does not exist.*--create-database"):
        server.store()
    assert server.sent("post") == []


def test_create_database_given_a_401_for_a_database_that_does_not_exist_creates_it_through_system():
    """Issue 13 point 5: with authentication on, a missing database answers 401/11, not
    1228; _system's list (has_database) tells a missing database from a refused login
    (that case: test_connection.py)."""
    server = ArangoStub()
    _opening(server, error_body(401, 11, "not authorized to execute this request"))
    server.store(create=True)
    assert [(r.method, r.database, r.endpoint, r.body) for r in server.requests] == [
        ("get", "graphsvc", "/_api/collection", None),
        ("get", "_system", "/_api/database", None),
        ("post", "_system", "/_api/database", {"name": "graphsvc"}),
        ("get", "graphsvc", "/_api/collection", None),
    ]


def test_a_missing_collection_is_named():
    server = ArangoStub()
    database(server, {})
    with pytest.raises(CollectionNotFound, match="products"):
        server.store().pull("products", {})
    assert server.sent()[-1].endpoint == "/_api/collection/products/properties"


def test_a_refused_connection_is_retried_by_python_arango_then_reported():
    from requests.exceptions import ConnectionError as RequestsConnectionError

    server = ArangoStub()
    server.on("get", "/_api/collection", raises(RequestsConnectionError("Connection refused")))
    # python-arango (arango/connection.py process_request) retries a ConnectionError per host and
    # raises its own client error, which names no host; connection._errors' "not reachable at <host>"
    # is reached by a timeout (next test)
    with pytest.raises(ArangoError, match="Can't connect to host"):
        server.store()
    assert len(server.sent("get", "/_api/collection")) == 3


def test_a_query_that_times_out_names_the_server_not_reachable_and_is_sent_once():
    server = ArangoStub()
    database(server, {"products": 2})
    server.on("post", "/_api/cursor", raises(ReadTimeout("Read timed out. (read timeout=600)")))
    with pytest.raises(StoreError, match=r"ArangoDB at .*localhost:8529 is not reachable: Read timed out"):
        server.store().get_documents("products", ["a"])
    assert len(server.sent("post", "/_api/cursor")) == 1


def test_drop_collection_deletes_it_and_a_missing_one_is_no_error():
    server = ArangoStub()
    database(server, {"products": 2})
    server.on("delete", "/_api/collection/products", {"error": False, "code": 200, "id": "1"})
    server.on("delete", "/_api/collection/gone", error_body(404, 1203, "collection or view not found: gone"))
    store = server.store()
    store.drop_collection("products")
    store.drop_collection("gone")
    assert [(r.method, r.endpoint, r.params, r.body) for r in server.sent("delete")] == [
        ("delete", "/_api/collection/products", {}, None), ("delete", "/_api/collection/gone", {}, None)]


# -- coverage of the AQL texts ---------------------------------------------------------------------------------
def _generated_texts() -> dict[str, str]:
    """The AQL texts built from fixed lines, in the shapes the tests above send: every
    APPROX_NEAR_COSINE shape (filtered or not, excluding a key or not, nProbe or not)."""
    shapes = [((), False, False), ((), True, True), (("lt", "eq"), False, True), (("in",), True, False)]
    return {
        "select_keys_query(0)": aql.select_keys_query(0),
        "select_keys_query(2)": aql.select_keys_query(2),
        "filter_keys_query(lt, in)": aql.filter_keys_query(["lt", "in"]),
        **{f"approx_near_cosine_filtered_query({ops}, {excluding}, n_probe={n_probe})":
           aql.approx_near_cosine_filtered_query(ops, excluding, n_probe=n_probe)
           for ops, excluding, n_probe in shapes},
    }


def test_every_aql_text_of_the_backend_is_sent_by_a_harness_test(request):
    """Runs last in this module; skipped when only part of the module was selected."""
    selected = {item.originalname for item in request.session.items if item.module is request.module}
    if selected < {name for name in dir(request.module) if name.startswith("test_")}:
        pytest.skip("only part of test_requests.py ran")
    expected = {**aql.QUERIES, **_generated_texts()}
    missing = sorted(name for name, text in expected.items() if text not in ArangoStub.aql_seen)
    assert missing == []
