"""Writes through the real ArangoStore over the request harness: what reaches the server."""

import pyarrow as pa
import pytest

from graphsvc.errors import StoreError
from graphsvc.store.arango import aql
from graphsvc.store.arango.state import state_document_key
from tests.store.arango.harness import ArangoStub, cursor_response
from tests.store.arango.routes_store import serve_collections, serve_queries, writing_cursor


def _write_back_server():
    server = ArangoStub()
    serve_collections(server, products="document")
    serve_queries(server, {
        aql.FIRST_MISSING_KEY: lambda r: cursor_response([]),
        aql.UPDATE_ATTRIBUTES: lambda r: writing_cursor([], len(r.body["bindVars"]["rows"])),
    })
    return server


def test_write_back_sends_nulls_so_the_server_clears_them_and_counts_every_row_it_wrote():
    """Issue 13, point 7: a null in a written-back column clears the attribute
    (UPDATE … keepNull: false removes it — the embedded store does the same), and a
    row of nulls only is written, not skipped while counted."""
    server = _write_back_server()
    store = server.store()
    update = pa.table({
        "_key": ["a", "b", "c"],
        "title": pa.array([None, "Bell 2", None]),
        "embedding": pa.array([[0.5], None, None], pa.list_(pa.float32())),
    })
    assert store.update_attributes("products", update) == 3
    [sent] = [r for r in server.sent("post", "/_api/cursor") if r.body["query"] == aql.UPDATE_ATTRIBUTES]
    assert "keepNull: false" in sent.body["query"] and "mergeObjects: false" in sent.body["query"]
    assert sent.body["bindVars"] == {"@collection": "products", "rows": [
        {"_key": "a", "title": None, "embedding": [0.5]},
        {"_key": "b", "title": "Bell 2", "embedding": None},
        {"_key": "c", "title": None, "embedding": None},
    ]}
    assert server.unanswered == []


def test_write_back_reports_what_the_server_says_it_wrote():
    server = _write_back_server()
    serve_queries(server, {
        aql.FIRST_MISSING_KEY: lambda r: cursor_response([]),
        aql.UPDATE_ATTRIBUTES: lambda r: writing_cursor([], 1),
    })
    store = server.store()
    assert store.update_attributes("products", pa.table({"_key": ["a", "b"], "score": [1.0, 2.0]})) == 1


@pytest.mark.parametrize("bad", ["a\n", "a\nb", "\na", "a b"])
def test_a_key_with_a_trailing_newline_is_refused_before_anything_is_sent(bad):
    """Issue 13, point 9: `re.match(…$)` let "a\\n" through; the server refuses it
    (1221, illegal document key)."""
    server = ArangoStub()
    serve_collections(server, products="document", bought_with="edge")
    store = server.store()
    with pytest.raises(StoreError, match="_key"):
        store.upsert_documents("products", [{"_key": "fine"}, {"_key": bad}])
    with pytest.raises(StoreError, match="_key"):
        store.upsert_table("products", pa.table({"_key": ["fine", bad]}))
    with pytest.raises(StoreError, match="_from"):
        store.upsert_documents("bought_with", [{"_key": "e", "_from": "products/" + bad, "_to": "products/b"}])
    with pytest.raises(StoreError, match="_to"):
        edges = pa.table({"_key": ["e"], "_from": ["products/a"], "_to": ["products/" + bad]})
        store.upsert_table("bought_with", edges)
    with pytest.raises(StoreError, match="invalid collection name"):
        store.create_collection("products" + bad)
    assert server.sent("post", "/_api/import") == [] and server.sent("post", "/_api/collection") == []


def test_a_state_key_with_a_trailing_newline_is_stored_hashed():
    assert state_document_key("run") == "k:run"
    assert state_document_key("run\n").startswith("h:")
