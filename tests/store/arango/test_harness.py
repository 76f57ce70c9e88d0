"""The request harness itself: the real ArangoStore over a recording python-arango client."""

import pytest

from graphsvc.errors import StoreError
from tests.store.arango.harness import ArangoStub, error_body


def _collection_listing():
    # GET /_api/collection (https://docs.arangodb.com/3.12/develop/http-api/collections/#list-all-collections)
    return {"error": False, "code": 200, "result": [
        {"id": "1", "name": "products", "isSystem": False, "status": 3, "type": 2, "globallyUniqueId": "h1"},
        {"id": "2", "name": "_graphs", "isSystem": True, "status": 3, "type": 2, "globallyUniqueId": "h2"},
    ]}


def test_the_real_store_lists_collections_through_the_stub_and_every_request_is_recorded():
    server = ArangoStub()
    server.on("get", "/_api/collection", _collection_listing())
    # GET /_api/collection/{name}/count (https://docs.arangodb.com/3.12/develop/http-api/collections/#get-the-document-count-of-a-collection)
    server.on("get", "/_api/collection/products/count",
              {"error": False, "code": 200, "id": "1", "name": "products", "isSystem": False, "status": 3,
               "type": 2, "count": 4000})
    store = server.store()
    [info] = store.collections()
    assert (info.name, info.kind, info.count) == ("products", "document", 4000)
    assert [(r.method, r.path) for r in server.requests] == [
        ("get", "/_db/graphsvc/_api/collection"),  # python-arango's verify on opening
        ("get", "/_db/graphsvc/_api/collection"),
        ("get", "/_db/graphsvc/_api/collection/products/count"),
    ]
    assert server.unanswered == []


def test_a_request_no_route_answers_fails_loudly_instead_of_being_guessed():
    server = ArangoStub()
    store = server.store()
    with pytest.raises((AssertionError, StoreError)):
        store.get_documents("products", ["a"])
    assert server.unanswered and server.unanswered[0].method in ("get", "post", "put")


def test_server_errors_come_back_in_the_documented_shape():
    server = ArangoStub()
    server.on("get", "/_api/collection", error_body(401, 11, "not authorized to execute this request"))
    with pytest.raises(StoreError):
        server.store()


def test_a_misspelt_attribute_in_a_body_fails_naming_the_endpoint_and_the_attribute():
    server = ArangoStub()
    server.on("get", "/_api/collection", {"error": False, "code": 200, "result": []})
    store = server.store()
    with pytest.raises(AssertionError, match=r"POST /_api/index \(index-create-vector.json\).*'nlists' was unexpected"):
        store._db.collection("products").add_index(
            {"type": "vector", "fields": ["embedding"], "params": {"metric": "cosine", "dimension": 8, "nlists": 2}})
    with pytest.raises(AssertionError, match=r"params/metric.*'dot' is not one of"):
        store._db.collection("products").add_index(
            {"type": "vector", "fields": ["embedding"], "params": {"metric": "dot", "dimension": 8}})
    assert len(server.violations) == 2
    server.violations.clear()  # seen: conftest's after-test check would fail this test otherwise


def test_a_request_to_an_endpoint_without_a_schema_fails():
    server = ArangoStub()
    server.on("get", "/_api/collection", {"error": False, "code": 200, "result": []})
    with pytest.raises(AssertionError, match="GET /_api/engine: no schema"):
        server.store()._db.engine()
    server.violations.clear()


def test_query_parameters_are_checked_too():
    server = ArangoStub()
    server.on("get", "/_api/collection", {"error": False, "code": 200, "result": []})
    with pytest.raises(AssertionError, match=r"params/onDuplicate: 'upsert' is not one of"):
        server.store()._db.collection("products").import_bulk([{"_key": "a"}], on_duplicate="upsert")
    server.violations.clear()
