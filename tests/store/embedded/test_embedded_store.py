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


def test_pull_casts_attributes_to_arrow_types_in_storage_order(store):
    store.create_collection("products")
    store.upsert_documents(
        "products",
        [{"_key": "b", "features": [1.5, 2.0], "category": 3}, {"_key": "a", "category": 7}],
    )
    table = pa.Table.from_batches(
        list(store.pull("products", {"features": pa.list_(pa.float32()), "category": pa.int64()}))
    )
    assert table.column("_key").to_pylist() == ["b", "a"]
    assert table.column("features").to_pylist() == [[1.5, 2.0], None]
    assert table.column("category").to_pylist() == [3, 7]
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


@pytest.mark.parametrize("share", [1, 3, 4])
def test_update_attributes_keeps_the_rows_and_columns_an_update_leaves_alone(store, share):
    """A share of rows (in place for 1 of 4, a rebuild for 3 of 4, a replacement when
    it rewrites every row and column) and a subset of the written-back columns."""
    keys = ["a", "b", "c", "d"]
    store.create_collection("products")
    store.upsert_documents("products", [{"_key": k} for k in keys])
    store.update_attributes("products", pa.table({"_key": keys, "score": [1.0, 2.0, 3.0, 4.0],
                                                  "label": ["w", "x", "y", "z"]}))
    columns = {"score": [10.0, 20.0, 30.0, 40.0][:share]}
    if share == 4:
        columns["label"] = ["W", "X", "Y", "Z"]
    store.update_attributes("products", pa.table({"_key": keys[:share], **columns}))
    documents = {d["_key"]: (d["score"], d["label"]) for d in store.get_documents("products", keys)}
    expected_scores = [10.0, 20.0, 30.0, 40.0][:share] + [1.0, 2.0, 3.0, 4.0][share:]
    expected_labels = ["W", "X", "Y", "Z"] if share == 4 else ["w", "x", "y", "z"]
    assert documents == {k: (s, lab) for k, s, lab in zip(keys, expected_scores, expected_labels)}
    assert store.collection("products").count == 4


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


def test_values_of_another_type_keep_their_type_through_the_overflow(store):
    store.create_collection("things")
    store.upsert_documents("things", [{"_key": "a", "size": 3, "tags": ["x"]}])
    store.upsert_documents("things", [{"_key": "b", "size": "large", "tags": ["y", "z"]}])
    store.upsert_documents("things", [{"_key": "c", "size": 2.5}, {"_key": "d", "mixed": [1, "one"]}])
    a, b, c, d = store.get_documents("things", ["a", "b", "c", "d"])
    assert (a["size"], b["size"], c["size"]) == (3, "large", 2.5)
    assert d["mixed"] == [1, "one"] and b["tags"] == ["y", "z"]
    assert store.select_keys("things", {"size": "large"}) == ["b"]
    assert store.select_keys("things", {"size": 3}) == ["a"]
    sizes = pa.Table.from_batches(list(store.pull("things", {"size": pa.float64()})))
    assert dict(zip(sizes.column("_key").to_pylist(), sizes.column("size").to_pylist())) == {
        "a": 3.0, "b": None, "c": 2.5, "d": None,
    }


def test_objects_of_different_shapes_round_trip(store):
    store.create_collection("things")
    store.upsert_documents("things", [{"_key": "a", "address": {"city": "Oslo"}}])
    store.upsert_documents("things", [{"_key": "b", "address": {"city": "Rome", "zip": "00100"}},
                                      {"_key": "c", "address": {"zip": "1"}}])
    a, b, c = store.get_documents("things", ["a", "b", "c"])
    assert a["address"] == {"city": "Oslo"}
    assert b["address"] == {"city": "Rome", "zip": "00100"}
    assert c["address"] == {"zip": "1"}


def test_upsert_table_keeps_the_last_row_of_a_key_and_writes_state_with_it(store):
    store.create_collection("things")
    table = pa.table({"_key": ["a", "b", "a"], "v": [1, 2, 3]})
    assert store.upsert_table("things", table, state=("restore:things", {"line": 3})) == 2
    assert [d["v"] for d in store.get_documents("things", ["a", "b"])] == [3, 2]
    assert store.get_state("restore:things") == {"line": 3}
    with pytest.raises(StoreError, match="invalid _key"):
        store.upsert_table("things", pa.table({"_key": ["ok", "not/ok"]}), state=("restore:things", {"line": 9}))
    assert store.get_state("restore:things") == {"line": 3}
    store.delete_state("restore:things")
    assert store.get_state("restore:things") is None


def test_written_back_attributes_win_until_the_document_is_replaced(store):
    store.create_collection("products")
    store.upsert_documents("products", [{"_key": "a", "score": 1.0, "title": "A"}, {"_key": "b", "title": "B"}])
    store.update_attributes("products", pa.table({"_key": ["a"], "score": [5.0]}))
    assert store.get_documents("products", ["a"])[0]["score"] == 5.0
    pulled = pa.Table.from_batches(list(store.pull("products", {"score": pa.float64(), "title": pa.string()})))
    assert pulled.to_pylist() == [{"_key": "a", "score": 5.0, "title": "A"}, {"_key": "b", "score": None, "title": "B"}]
    # a full write-back (rebuild) and a small one (in place) both merge with what was written
    store.update_attributes("products", pa.table({"_key": ["a", "b"], "rank": [1, 2]}))
    store.update_attributes("products", pa.table({"_key": ["b"], "score": [7.0]}))
    a, b = store.get_documents("products", ["a", "b"])
    assert (a["score"], a["rank"], b["score"], b["rank"]) == (5.0, 1, 7.0, 2)
    # replacing a document drops what was written back onto it, as ArangoDB's replace does
    store.upsert_documents("products", [{"_key": "a", "title": "A2"}])
    a = store.get_documents("products", ["a"])[0]
    assert "score" not in a and "rank" not in a and a["title"] == "A2"


def test_dangling_edges_are_counted_with_examples(store):
    store.create_collection("users")
    store.create_collection("rated", "edge")
    store.upsert_documents("users", [{"_key": "u1"}])
    store.upsert_documents("rated", [
        {"_key": "e1", "_from": "users/u1", "_to": "users/u1"},
        {"_key": "e2", "_from": "users/u1", "_to": "movies/m1"},
        {"_key": "e3", "_from": "users/u9", "_to": "users/u1"},
    ])
    dangling = store.dangling_edges("rated", examples=1)
    assert dangling.count == 2
    assert dangling.examples == ({"_key": "e2", "_from": "users/u1", "_to": "movies/m1"},)


def test_secondary_indexes_are_reported_as_skipped(store):
    store.create_collection("users")
    assert store.create_index("users", {"type": "primary", "fields": ["_key"]}).status == "exists"
    outcome = store.create_index("users", {"type": "persistent", "fields": ["name"]})
    assert outcome.status == "skipped" and "secondary indexes" in outcome.reason


def test_edges_with_untyped_null_ends_are_refused_cleanly(store):
    store.create_collection("links", "edge")
    with pytest.raises(StoreError, match="_from"):
        store.upsert_table("links", pa.table({"_key": ["e1"], "_from": [None], "_to": ["p/b"]}))
    assert store.collection("links").count == 0
