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
