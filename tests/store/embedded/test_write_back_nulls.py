"""Write-back semantics the embedded store shares with ArangoDB (issue 13, point 7): a
null clears the attribute of that document — the restored value underneath too — and
every row of the table is written and counted, rows of nulls included."""

import pyarrow as pa
import pytest

from graphsvc.store.embedded import EmbeddedStore


@pytest.fixture
def store(tmp_path):
    with EmbeddedStore(tmp_path / "s.duckdb") as store:
        store.create_collection("products")
        store.upsert_documents("products", [
            {"_key": "a", "title": "Anvil", "price": 9.5},
            {"_key": "b", "title": "Bell", "odd": "text"},  # "odd" mixes types: b's lives in the overflow JSON
            {"_key": "c", "title": "Clock", "odd": 1},
        ])
        yield store


def _pulled(store, attributes):
    return {r["_key"]: r for b in store.pull("products", attributes) for r in b.to_pylist()}


def test_a_null_clears_a_restored_attribute_instead_of_letting_the_old_value_show(store):
    update = pa.table({"_key": ["a", "b"], "title": pa.array([None, "Bell 2"])})
    assert store.update_attributes("products", update) == 2
    a, b = store.get_documents("products", ["a", "b"])
    assert "title" not in a and a["price"] == 9.5
    assert b["title"] == "Bell 2"
    assert _pulled(store, {"title": pa.string()})["a"]["title"] is None


def test_a_null_clears_an_earlier_write_back(store):
    store.update_attributes("products", pa.table({"_key": ["a", "b"], "rank": [1, 2]}))
    assert store.update_attributes("products", pa.table({"_key": ["a"], "rank": pa.array([None], pa.int64())})) == 1
    a, b = store.get_documents("products", ["a", "b"])
    assert "rank" not in a and b["rank"] == 2


def test_a_row_of_nulls_only_is_written_and_counted(store):
    update = pa.table({"_key": ["a", "c"], "title": pa.array([None, "Clock 2"]), "price": pa.array([None, 3.0])})
    assert store.update_attributes("products", update) == 2
    a, c = store.get_documents("products", ["a", "c"])
    assert "title" not in a and "price" not in a
    assert (c["title"], c["price"]) == ("Clock 2", 3.0)


def test_a_column_of_nulls_only_clears_values_in_columns_and_overflow_and_fixes_no_type(store):
    cleared = pa.table({"_key": ["b", "c"], "odd": pa.array([None, None])})  # Arrow type null
    assert store.update_attributes("products", cleared) == 2
    b, c = store.get_documents("products", ["b", "c"])
    assert "odd" not in b and "odd" not in c
    assert {k: r["odd"] for k, r in _pulled(store, {"odd": pa.string()}).items()} == {"a": None, "b": None, "c": None}
    # the column of nulls left no typed column behind: a later write of strings is fine
    assert store.update_attributes("products", pa.table({"_key": ["a"], "odd": ["later"]})) == 1
    assert store.get_documents("products", ["a"])[0]["odd"] == "later"
