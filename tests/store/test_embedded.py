import pyarrow as pa
import pytest

from graphsvc.errors import CollectionNotFound, DocumentNotFound, StoreError
from graphsvc.store import open_store


@pytest.fixture
def store(tmp_path):
    with open_store(str(tmp_path / "store.duckdb"), create=True) as s:
        yield s


def test_upsert_replaces_by_key_and_counts(store):
    store.create_collection("products")
    assert store.upsert_documents("products", [{"_key": "a", "x": 1}, {"_key": "b", "x": 2}]) == 2
    store.upsert_documents("products", [{"_key": "a", "y": 3}])
    assert store.collection("products").count == 2
    a, b, missing = store.get_documents("products", ["a", "b", "zz"])
    assert a == {"_key": "a", "_id": "products/a", "_rev": a["_rev"], "y": 3}
    assert b["x"] == 2 and missing is None


def test_pull_casts_attributes_to_arrow_types_ordered_by_key(store):
    store.create_collection("products")
    store.upsert_documents(
        "products",
        [{"_key": "b", "features": [1.5, 2.0], "category": 3}, {"_key": "a", "category": 7}],
    )
    table = pa.Table.from_batches(
        list(store.pull("products", {"features": pa.list_(pa.float32()), "category": pa.int64()}))
    )
    assert table.column("_key").to_pylist() == ["a", "b"]
    assert table.column("features").to_pylist() == [None, [1.5, 2.0]]
    assert table.column("category").to_pylist() == [7, 3]
    assert table.schema.field("features").type == pa.list_(pa.float32())


def test_edges_need_from_and_to_and_stream_as_arrow(store):
    store.create_collection("bought_with", "edge")
    with pytest.raises(StoreError, match="_to"):
        store.upsert_documents("bought_with", [{"_key": "e1", "_from": "products/a"}])
    assert store.collection("bought_with").count == 0
    store.upsert_documents("bought_with", [{"_from": "products/a", "_to": "products/b"}])
    edges = pa.Table.from_batches(list(store.pull_edges("bought_with")))
    assert edges.to_pylist() == [{"_from": "products/a", "_to": "products/b"}]


def test_update_attributes_merges_and_rejects_unknown_keys_atomically(store):
    store.create_collection("products")
    store.upsert_documents("products", [{"_key": "a", "title": "x"}, {"_key": "b"}])
    marker = store.change_marker("products")
    update = pa.table(
        {
            "_key": ["a", "b"],
            "embedding": pa.array([[0.1, 0.2], [0.3, 0.4]], pa.list_(pa.float32())),
            "similar": pa.array([[{"_key": "b", "score": 0.5}], [{"_key": "a", "score": 0.5}]]),
        }
    )
    assert store.update_attributes("products", update) == 2
    a = store.get_documents("products", ["a"])[0]
    assert a["title"] == "x"
    assert a["embedding"] == [0.1, 0.2]
    assert a["similar"] == [{"_key": "b", "score": 0.5}]
    assert store.change_marker("products") > marker

    bad = pa.table({"_key": ["a", "nope"], "score": [1.0, 2.0]})
    with pytest.raises(DocumentNotFound, match="products/nope"):
        store.update_attributes("products", bad)
    assert "score" not in store.get_documents("products", ["a"])[0]


def test_select_keys_by_equality(store):
    store.create_collection("movies")
    store.upsert_documents(
        "movies", [{"_key": "m1", "genre": "Horror", "year": 1990}, {"_key": "m2", "genre": "Drama"}]
    )
    assert store.select_keys("movies", {"genre": "Horror"}) == ["m1"]
    assert store.select_keys("movies", {"year": 1990}) == ["m1"]
    assert store.select_keys("movies") == ["m1", "m2"]


def test_missing_collection_and_missing_store_are_named(tmp_path, store):
    with pytest.raises(CollectionNotFound, match="'nothing'"):
        store.pull("nothing", {})
    with pytest.raises(StoreError, match="absent.duckdb does not exist"):
        open_store(str(tmp_path / "absent.duckdb"))


def test_values_that_look_like_sql_are_data(store):
    store.create_collection("products")
    key = "x'--"
    store.upsert_documents("products", [{"_key": key, "name": "a\" || true || \""}])
    assert store.select_keys("products", {"name": "a\" || true || \""}) == [key]
    assert store.select_keys("products", {"name": "' OR 1=1 --"}) == []
