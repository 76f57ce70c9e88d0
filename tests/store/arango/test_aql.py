"""The AQL texts: values only as bind parameters."""

import pytest

from graphsvc.store.arango import aql


def test_every_aql_text_takes_values_only_as_bind_parameters():
    assert len(aql.QUERIES) >= 14
    for name, text in aql.QUERIES.items():
        assert aql.unsafe_parts(text) == [], name
        assert "@collection" in aql.bind_parameter_names(text), name


@pytest.mark.parametrize("conditions", [0, 1, 3])
def test_select_keys_query_numbers_its_placeholders(conditions):
    text = aql.select_keys_query(conditions)
    assert aql.unsafe_parts(text) == []
    expected = {"@collection"} | {f"attr_{n}" for n in range(conditions)} | {f"value_{n}" for n in range(conditions)}
    assert aql.bind_parameter_names(text) == expected
    assert text.count("FILTER d[@attr_") == conditions


def test_unsafe_parts_finds_data_spliced_into_a_query():
    assert aql.unsafe_parts('FOR d IN c FILTER d.name == "@name" RETURN d')
    assert aql.unsafe_parts("FOR d IN c FILTER d.name == 'x' || true || '' RETURN d")
    assert aql.unsafe_parts("FOR d IN {collection} RETURN d")
    assert aql.unsafe_parts("FILTER d.x == %s")
    assert aql.unsafe_parts('OPTIONS { overwriteMode: "replace" }') == []


def test_bind_parameter_names_ignore_text_inside_literals():
    assert aql.bind_parameter_names('FOR d IN @@c FILTER d.x == @v RETURN "@not"') == {"@c", "v"}


@pytest.mark.parametrize("operators", [[], ["eq"], ["lt", "in", "ne", "gte"]])
@pytest.mark.parametrize("excluding_key", [False, True])
def test_approx_near_cosine_query_has_at_most_one_filter_before_the_sort(operators, excluding_key):
    """Issue 13 point 3: one FILTER node between FOR and SORT is what useVectorIndexRule
    (arangodb/arangodb, arangod/Aql) pushes into the vector lookup; a second one stops it."""
    text = aql.approx_near_cosine_filtered_query(operators, excluding_key)
    inner = text[: text.index("SORT score DESC")]
    assert inner.count("FILTER") == (1 if operators else 0)
    assert aql.unsafe_parts(text) == []
    expected = {"@collection", "attribute", "query_vector", "k", "n_probe"} | (
        {"key", "limit"} if excluding_key else set())
    expected |= {f"{kind}_{n}" for n in range(len(operators)) for kind in ("attr", "value")}
    assert aql.bind_parameter_names(text) == expected
    assert "APPROX_NEAR_COSINE(d[@attribute], @query_vector, { nProbe: @n_probe })" in text


def test_vector_index_counting_queries_bind_the_attribute_and_dimension():
    assert aql.bind_parameter_names(aql.VECTOR_COUNTS) == {"@collection", "attribute", "dimension"}
    assert aql.bind_parameter_names(aql.VECTOR_PROBLEM_KEYS) == {"@collection", "attribute", "dimension", "missing",
                                                                "examples"}
