import pytest

from graphsvc.service.errors import FilterError
from graphsvc.service.filters import canonical, parse_filter
from graphsvc.store.base import Condition


def test_shorthands_and_operators_become_conditions():
    conditions = parse_filter({"category": "Books", "price": {"gte": 5, "lt": 20}, "brand": {"in": ["A", "B"]}})
    assert conditions == [Condition("category", "eq", "Books"), Condition("price", "gte", 5),
                          Condition("price", "lt", 20), Condition("brand", "in", ("A", "B"))]
    assert parse_filter('{"ok": true}') == [Condition("ok", "eq", True)]
    assert parse_filter(None) == [] and parse_filter({}) == []


def test_the_same_filter_in_any_order_has_one_canonical_form():
    assert canonical(parse_filter({"a": 1, "b": {"in": ["x", 2]}})) == canonical(
        parse_filter({"b": {"in": ["x", 2]}, "a": 1})
    )


@pytest.mark.parametrize("spec, message", [
    ("{oops", "filter is not valid JSON"),
    ([1, 2], "must be a JSON object"),
    ({"price": {"like": "x"}}, "'price': unknown operator 'like'"),
    ({"price": {"lt": True}}, "'price': lt needs a number or a string, not a boolean"),
    ({"price": {"lt": None}}, "'price': null is not a filter value"),
    ({"price": {"lt": float("nan")}}, "finite number"),
    ({"tags": ["a"]}, "'tags': write a list of values as"),
    ({"tags": {"in": "a"}}, "'tags': 'in' needs a list"),
    ({"tags": {"in": [{"x": 1}]}}, "takes a string, number or boolean"),
    ({"tags": {}}, "'tags': empty constraint"),
    ({f"a{i}": 1 for i in range(17)}, "at most 16"),
    ({"": 1}, "1 to 256 characters"),
])
def test_malformed_filters_name_what_is_wrong(spec, message):
    with pytest.raises(FilterError, match=message.replace("(", r"\(")):
        parse_filter(spec)
