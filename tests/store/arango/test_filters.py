"""Structured filters and --explain-aql as AQL: every attribute name and value a bind parameter."""

from types import SimpleNamespace

import pytest

from graphsvc.errors import StoreError
from graphsvc.store.arango import aql
from graphsvc.store.arango.filters import filter_keys_query, similarity_query
from graphsvc.store.arango.vector_index import default_n_lists, scaled_n_probe
from graphsvc.store.base import FILTER_OPERATORS, Condition
from tests.store.arango.harness import ArangoStub, cursor_response, error_body


def test_vector_query_binds_collection_attribute_k_and_vector():
    query = similarity_query("products", 10, [0.5, 1])
    assert "APPROX_NEAR_COSINE(d[@attribute], @query_vector)" in str(query)
    assert query.bind_vars == {"@collection": "products", "attribute": "embedding", "k": 10, "query_vector": [0.5, 1.0]}
    assert aql.bind_parameter_names(query.text) == set(query.bind_vars)


def test_filter_queries_bind_every_attribute_name_and_value():
    conditions = [Condition(f"attr {op}", op, [1, 2] if op == "in" else 1) for op in FILTER_OPERATORS]
    query = filter_keys_query("products", conditions)
    assert aql.unsafe_parts(query.text) == []
    assert aql.bind_parameter_names(query.text) == set(query.bind_vars)
    assert query.bind_vars["attr_0"] == "attr eq" and query.bind_vars["value_6"] == [1, 2]
    assert query.text.count("FILTER") == len(FILTER_OPERATORS)
    assert "TYPENAME(d[@attr_2]) == TYPENAME(@value_2) && d[@attr_2] < @value_2" in query.text


def test_unknown_filter_operators_are_refused_before_any_query():
    with pytest.raises(StoreError, match="'price': unknown operator 'like'"):
        filter_keys_query("products", [Condition("price", "like", "%")])


def test_explained_similarity_query_drops_the_document_itself_and_keeps_filters():
    query = similarity_query("products", 10, [0.5, 1], [Condition("category", "in", ["Books"])], excluding_key="P1")
    assert aql.unsafe_parts(query.text) == []
    assert aql.bind_parameter_names(query.text) == set(query.bind_vars)
    assert query.bind_vars["limit"] == 11 and query.bind_vars["key"] == "P1"
    assert "APPROX_NEAR_COSINE(d[@attribute], @query_vector)" in query.text
    assert "FILTER (d[@attr_0] IN @value_0)" in query.text and "FILTER hit._key != @key" in query.text
    plain = similarity_query("products", 5)
    assert aql.bind_parameter_names(plain.text) == set(plain.bind_vars) | {"query_vector"}


def test_filtered_vector_query_has_one_filter_with_every_condition_anded():
    """Issue 13 point 3: the server's use-vector-index rule takes one FILTER between FOR and SORT."""
    conditions = [Condition("category", "eq", "Books"), Condition("price", "lt", 20), Condition("tag", "in", ["a"])]
    query = similarity_query("products", 10, [0.5, 1], conditions, n_probe=24)
    lines = query.text.splitlines()
    assert [line for line in lines if "FILTER" in line] == [
        "  FILTER (d[@attr_0] == @value_0) AND (TYPENAME(d[@attr_1]) == TYPENAME(@value_1) && d[@attr_1] < @value_1)"
        " AND (d[@attr_2] IN @value_2)"]
    assert lines[:4] == ["FOR d IN @@collection", lines[1],
                         "  LET score = APPROX_NEAR_COSINE(d[@attribute], @query_vector, { nProbe: @n_probe })",
                         "  SORT score DESC"]
    assert lines[4] == "  LIMIT @k"
    assert aql.unsafe_parts(query.text) == [] and aql.bind_parameter_names(query.text) == set(query.bind_vars)
    assert query.bind_vars["n_probe"] == 24


def test_vector_query_passes_n_probe_only_when_given():
    """Issue 13 point 4: nProbe in the function's options; without it the index's defaultNProbe applies."""
    assert "nProbe" not in similarity_query("products", 10, [1.0]).text
    assert similarity_query("products", 10, [1.0], n_probe=7).bind_vars["n_probe"] == 7
    with pytest.raises(StoreError, match="nProbe must be at least 1"):
        similarity_query("products", 10, [1.0], n_probe=0)


@pytest.mark.parametrize("version, refused", [("3.12.4", True), ("3.12.5", True), ("3.12.6", False),
                                               ("3.12.10", False)])
def test_filtered_vector_queries_are_refused_below_3_12_6(version, refused):
    """Issue 13 point 3: 3.12.4-3.12.5 answer error 1554 to a FILTER inside the vector search."""
    conditions = [Condition("category", "eq", "Books")]
    if refused:
        with pytest.raises(StoreError, match=f"ArangoDB {version} cannot filter inside a vector search on "
                                             "'products' \\(error 1554 there\\).*3.12.6 or later"):
            similarity_query("products", 10, [1.0], conditions, server_version=version)
    else:
        assert "FILTER (" in similarity_query("products", 10, [1.0], conditions, server_version=version).text
    assert "FILTER" not in similarity_query("products", 10, [1.0], server_version=version).text


# -- the real store running the query through the request harness ----------------------------
def test_store_vector_search_sends_one_filter_and_n_probe_and_reads_the_hits():
    server = ArangoStub(version="3.12.6")
    server.on("post", "/_api/cursor", cursor_response([{"_key": "P2", "score": 0.9}, {"_key": "P3", "score": 0.8}]))
    hits = server.store().vector_search("products", [1.0, 0.0], 5, [Condition("category", "eq", "Books")],
                                        excluding_key="P1", n_probe=12)
    assert hits == [("P2", 0.9), ("P3", 0.8)]
    [cursor] = server.sent("post", "/_api/cursor")
    assert cursor.body["query"] == aql.approx_near_cosine_filtered_query(["eq"], True)
    assert cursor.body["bindVars"] == {"@collection": "products", "attribute": "embedding", "k": 5, "limit": 6,
                                       "key": "P1", "attr_0": "category", "value_0": "Books",
                                       "query_vector": [1.0, 0.0], "n_probe": 12}


def test_store_refuses_a_filtered_vector_search_on_3_12_5_before_sending_it():
    server = ArangoStub(version="3.12.5")
    with pytest.raises(StoreError, match="3.12.5 cannot filter inside a vector search"):
        server.store().vector_search("products", [1.0], 5, [Condition("category", "eq", "Books")])
    assert server.sent("post", "/_api/cursor") == []


def test_error_1554_from_the_server_says_which_index_is_missing():
    server = ArangoStub(version="3.12.6")
    server.on("post", "/_api/cursor", error_body(400, 1554, "vector search not applied"))
    with pytest.raises(StoreError, match="did not use a vector index for APPROX_NEAR_COSINE on 'products' "
                                         "\\(error 1554\\): build one on 'embedding'"):
        server.store().vector_search("products", [1.0], 5)


def test_explain_n_probe_is_the_one_recorded_by_the_embed_job_else_the_same_rule():
    from graphsvc.cli import _arangodb_n_probe

    recorded = SimpleNamespace(extra={"arangodb_vector_index": {"defaultNProbe": 42}}, count=10_000,
                               params={"nlist": 100, "nprobe": 8})
    assert _arangodb_n_probe(recorded) == 42
    derived = SimpleNamespace(extra={}, count=10_000, params={"nlist": 100, "nprobe": 8})
    assert _arangodb_n_probe(derived) == scaled_n_probe(default_n_lists(10_000), 100, 8) == 120
    exact = SimpleNamespace(extra={}, count=400, params={"nlist": None, "nprobe": None})
    assert _arangodb_n_probe(exact) == default_n_lists(400)
