"""Structured filters and --explain-aql as AQL: every attribute name and value a bind parameter."""

import pytest

from graphsvc.errors import StoreError
from graphsvc.store.arango import aql
from graphsvc.store.arango.filters import filter_keys_query, similarity_query
from graphsvc.store.base import FILTER_OPERATORS, Condition


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
    assert "FILTER d[@attr_0] IN @value_0" in query.text and "FILTER hit._key != @key" in query.text
    plain = similarity_query("products", 5)
    assert aql.bind_parameter_names(plain.text) == set(plain.bind_vars) | {"query_vector"}
