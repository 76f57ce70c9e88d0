"""One contract for every store backend: what jobs and the service rely on, through the
port's methods only, so a pass means the same on each backend.

The embedded store always runs. ArangoDB runs when GRAPHSVC_TEST_ARANGO_URL names a
server (`arangodb://root@localhost:8529`, password in ARANGO_PASSWORD): each run makes
a throw-away database there and drops it at the end.
"""

import math
import os
import uuid
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa
import pytest

from graphsvc.errors import CollectionNotFound, DocumentNotFound, StoreError
from graphsvc.store import open_store
from graphsvc.store.base import EdgeDefinition, GraphInfo

ARANGO_URL_VARIABLE = "GRAPHSVC_TEST_ARANGO_URL"
HOSTILE = ['x" || true || "', "' OR 1=1 --", "x' || 1 == 1 || 'y", "@@collection", "} RETURN 1 //"]


@pytest.fixture(scope="session")
def arango_database_url():
    base = os.environ.get(ARANGO_URL_VARIABLE)
    if not base:
        pytest.skip(f"{ARANGO_URL_VARIABLE} is not set: no ArangoDB server to test against")
    from arango import ArangoClient

    from graphsvc.store.arango.store_url import parse_store_url

    parts = urlsplit(base)
    database = f"graphsvc_test_{uuid.uuid4().hex[:12]}"
    url = urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, ""))
    open_store(url, create=True).close()
    yield url
    settings = parse_store_url(url)
    client = ArangoClient(hosts=list(settings.hosts), verify_override=settings.verify if settings.tls else None)
    try:
        client.db("_system", settings.username, settings.password).delete_database(database, ignore_missing=True)
    finally:
        client.close()


def _empty_arango_database(store) -> None:
    """Back to an empty database between tests (graphs, collections, job state)."""
    database = store._db
    for graph in database.graphs():
        database.delete_graph(graph["name"], ignore_missing=True)
    for collection in database.collections():
        if not collection["system"]:
            database.delete_collection(collection["name"], ignore_missing=True)


@pytest.fixture(params=["embedded", "arangodb"])
def store(request, tmp_path):
    if request.param == "embedded":
        with open_store(str(tmp_path / "s.duckdb"), create=True) as embedded:
            yield embedded
        return
    url = request.getfixturevalue("arango_database_url")
    arango = open_store(url)
    try:
        yield arango
    finally:
        _empty_arango_database(arango)
        arango.close()


def pulled(store, name, attributes, **options) -> pa.Table:
    schema = pa.schema([("_key", pa.string())] + list(attributes.items()))
    batches = list(store.pull(name, attributes, **options))
    return pa.Table.from_batches(batches, schema=schema).sort_by("_key")


def edges_of(store, name) -> list[tuple[str, str]]:
    schema = pa.schema([("_from", pa.string()), ("_to", pa.string())])
    table = pa.Table.from_batches(list(store.pull_edges(name)), schema=schema)
    return sorted(zip(table.column("_from").to_pylist(), table.column("_to").to_pylist()))


def body(document):
    """A document without the attributes the store assigns."""
    return {k: v for k, v in document.items() if k not in ("_id", "_rev")}


def same_floats(actual, expected) -> bool:
    return len(actual) == len(expected) and all(math.isclose(a, e, rel_tol=1e-6) for a, e in zip(actual, expected))


@pytest.fixture
def products(store):
    store.create_collection("products")
    store.upsert_documents(
        "products",
        [
            {"_key": "a", "title": "Anvil", "category": 3, "price": 9.5},
            {"_key": "b", "title": "Bell", "category": 3},
            {"_key": "c", "title": "Clock", "category": 7, "price": 20.0},
        ],
    )
    return store


# -- collections ----------------------------------------------------------------------------------
def test_collections_are_created_with_their_kind_and_counted(store):
    assert store.create_collection("products").kind == "document"
    assert store.create_collection("bought_with", "edge").kind == "edge"
    store.upsert_documents("products", [{"_key": "a"}, {"_key": "b"}])
    listed = {c.name: (c.kind, c.count) for c in store.collections()}
    assert listed == {"products": ("document", 2), "bought_with": ("edge", 0)}
    assert store.collection("products").count == 2
    assert store.has_collection("products") and not store.has_collection("absent")


def test_creating_an_existing_collection_keeps_it_but_not_as_another_kind(store):
    store.create_collection("products")
    store.upsert_documents("products", [{"_key": "a"}])
    assert store.create_collection("products").count == 1
    with pytest.raises(StoreError, match="document collection"):
        store.create_collection("products", "edge")


def test_dropped_collections_are_gone_and_dropping_an_absent_one_is_fine(store):
    store.create_collection("products")
    store.drop_collection("products")
    store.drop_collection("products")
    assert not store.has_collection("products")
    with pytest.raises(CollectionNotFound, match="'products'"):
        store.collection("products")


def test_missing_collections_are_named_by_every_operation(store):
    for call in (
        lambda: store.pull("nothing", {}),
        lambda: store.pull_edges("nothing"),
        lambda: store.get_documents("nothing", ["a"]),
        lambda: store.select_keys("nothing"),
        lambda: store.upsert_documents("nothing", [{"_key": "a"}]),
        lambda: store.update_attributes("nothing", pa.table({"_key": ["a"], "x": [1]})),
        lambda: store.remove_documents("nothing", ["a"]),
        lambda: store.change_marker("nothing"),
    ):
        with pytest.raises(CollectionNotFound, match="'nothing'"):
            call()


# -- writes -------------------------------------------------------------------------------------------
def test_upsert_documents_replaces_whole_documents_by_key(products):
    assert products.upsert_documents("products", [{"_key": "a", "title": "Axe"}, {"_key": "d", "title": "Drum"}]) == 2
    a, d = products.get_documents("products", ["a", "d"])
    assert body(a) == {"_key": "a", "title": "Axe"}
    assert body(d) == {"_key": "d", "title": "Drum"}
    assert a["_id"] == "products/a"
    assert products.collection("products").count == 4


def test_upsert_table_keeps_the_last_row_of_a_repeated_key_and_nulls_are_absent(store):
    store.create_collection("products")
    table = pa.table(
        {
            "_key": ["a", "b", "a"],
            "title": ["first", "Bell", "last"],
            "price": pa.array([1.0, None, 3.0]),
        }
    )
    assert store.upsert_table("products", table) == 2
    a, b = store.get_documents("products", ["a", "b"])
    assert body(a) == {"_key": "a", "title": "last", "price": 3.0}
    assert body(b) == {"_key": "b", "title": "Bell"}


def test_upsert_table_replaces_existing_documents_and_records_state(products):
    table = pa.table({"_key": ["a"], "category": [4]})
    assert products.upsert_table("products", table, state=("restore/products", {"line": 812})) == 1
    assert body(products.get_documents("products", ["a"])[0]) == {"_key": "a", "category": 4}
    assert products.get_state("restore/products") == {"line": 812}


def test_edges_need_from_and_to_and_bad_documents_write_nothing(store):
    store.create_collection("bought_with", "edge")
    with pytest.raises(StoreError, match="_to"):
        store.upsert_documents(
            "bought_with",
            [{"_key": "e1", "_from": "products/a", "_to": "products/b"}, {"_key": "e2", "_from": "products/a"}],
        )
    with pytest.raises(StoreError, match="_from"):
        no_from = pa.table({"_key": ["e1"], "_from": pa.array([None], pa.string()), "_to": ["products/b"]})
        store.upsert_table("bought_with", no_from)
    assert store.collection("bought_with").count == 0


def test_invalid_keys_are_refused_without_writing(store):
    store.create_collection("products")
    for hostile in HOSTILE[:2]:
        with pytest.raises(StoreError, match="_key"):
            store.upsert_documents("products", [{"_key": "fine"}, {"_key": hostile}])
        with pytest.raises(StoreError, match="_key"):
            store.upsert_table("products", pa.table({"_key": ["fine", hostile]}))
    assert store.collection("products").count == 0


def test_remove_documents_counts_the_ones_that_existed(products):
    assert products.remove_documents("products", ["a", "zz", "a"]) == 1
    assert products.get_documents("products", ["a", "b"])[0] is None
    assert products.remove_documents("products", []) == 0
    assert products.collection("products").count == 2


def test_update_attributes_merges_columns_into_existing_documents(products):
    update = pa.table(
        {
            "_key": ["a", "b"],
            "embedding": pa.array([[0.1, 0.2], [0.3, 0.4]], pa.list_(pa.float32())),
            "similar": pa.array([[{"_key": "b", "score": 0.5}], [{"_key": "a", "score": 0.25}]]),
        }
    )
    assert products.update_attributes("products", update) == 2
    a = products.get_documents("products", ["a"])[0]
    assert (a["title"], a["category"], a["price"]) == ("Anvil", 3, 9.5)
    assert same_floats(a["embedding"], [0.1, 0.2])
    assert a["similar"] == [{"_key": "b", "score": 0.5}]
    # a second write-back replaces the attribute's value
    again = pa.table({"_key": ["a"], "similar": pa.array([[{"_key": "c", "score": 1.0}]])})
    products.update_attributes("products", again)
    assert products.get_documents("products", ["a"])[0]["similar"] == [{"_key": "c", "score": 1.0}]


def test_update_attributes_with_an_unknown_key_writes_nothing(products):
    bad = pa.table({"_key": ["a", "nope", "b"], "score": [1.0, 2.0, 3.0]})
    with pytest.raises(DocumentNotFound, match="products/nope"):
        products.update_attributes("products", bad)
    assert all("score" not in d for d in products.get_documents("products", ["a", "b"]))
    assert products.collection("products").count == 3


# -- reads ----------------------------------------------------------------------------------------------
def test_pull_casts_attributes_to_the_requested_types_with_nulls_for_missing_ones(products):
    table = pulled(
        products,
        "products",
        {"title": pa.string(), "price": pa.float64(), "category": pa.int64(), "absent": pa.float32()},
    )
    assert table.schema.field("price").type == pa.float64()
    assert table.to_pylist() == [
        {"_key": "a", "title": "Anvil", "price": 9.5, "category": 3, "absent": None},
        {"_key": "b", "title": "Bell", "price": None, "category": 3, "absent": None},
        {"_key": "c", "title": "Clock", "price": 20.0, "category": 7, "absent": None},
    ]


def test_pull_reads_written_back_vectors_as_arrow_lists(products):
    embedding = pa.array([[0.5, 1.5], [2.5, 3.5], [4.5, 5.5]], pa.list_(pa.float32()))
    products.update_attributes("products", pa.table({"_key": ["a", "b", "c"], "embedding": embedding}))
    table = pulled(products, "products", {"embedding": pa.list_(pa.float32())})
    assert table.schema.field("embedding").type == pa.list_(pa.float32())
    assert table.column("embedding").to_pylist() == [[0.5, 1.5], [2.5, 3.5], [4.5, 5.5]]


def test_pull_streams_in_batches_in_a_stable_order(store):
    store.create_collection("products")
    store.upsert_table("products", pa.table({"_key": [f"p{i:03d}" for i in range(25)], "n": list(range(25))}))
    batches = list(store.pull("products", {"n": pa.int64()}, batch_size=10))
    assert sum(b.num_rows for b in batches) == 25
    assert all(b.num_rows <= 10 for b in batches)
    first = [k for b in batches for k in b.column("_key").to_pylist()]
    again = [k for b in store.pull("products", {"n": pa.int64()}, batch_size=7) for k in b.column("_key").to_pylist()]
    assert first == again
    assert sorted(first) == [f"p{i:03d}" for i in range(25)]


def test_pull_edges_streams_from_and_to_of_edge_collections_only(products):
    products.create_collection("bought_with", "edge")
    products.upsert_documents(
        "bought_with",
        [{"_key": "e1", "_from": "products/a", "_to": "products/b"}, {"_from": "products/b", "_to": "products/c"}],
    )
    assert edges_of(products, "bought_with") == [("products/a", "products/b"), ("products/b", "products/c")]
    with pytest.raises(StoreError, match="not an edge collection"):
        products.pull_edges("products")


def test_key_ranges_hold_every_key_once_and_range_pulls_read_them_in_key_order(store):
    """Issue 14: a read task per key range; together the ranges' pulls are the whole
    collection once, each range in key order, written-back attributes included."""
    store.create_collection("products")
    keys = [f"p{i:04d}" for i in range(300)]
    shuffled = keys[7:] + keys[:7]  # loaded out of key order
    store.upsert_table("products", pa.table({"_key": shuffled, "n": [int(k[1:]) for k in shuffled]}))
    store.update_attributes("products", pa.table({"_key": keys[::3], "score": [1.5] * len(keys[::3])}))
    ranges = store.key_ranges("products", 4)
    assert 2 <= len(ranges) <= 4 and ranges[0][0] is None and ranges[-1][1] is None
    assert all(low == high for (_, low), (high, _) in zip(ranges, ranges[1:]))  # contiguous
    pieces = [[row for batch in store.pull_range("products", {"n": pa.int64(), "score": pa.float64()}, key_range,
                                                  batch_size=40) for row in batch.to_pylist()]
              for key_range in ranges]
    rows = [row for piece in pieces for row in piece]
    assert [row["_key"] for row in rows] == keys
    assert all(piece for piece in pieces) and max(map(len, pieces)) <= 2 * min(map(len, pieces))
    assert [row["n"] for row in rows] == list(range(300))
    assert [row["score"] for row in rows] == [1.5 if i % 3 == 0 else None for i in range(300)]
    assert store.key_ranges("products", 1) == [(None, None)]


def test_edge_range_pulls_read_each_edge_once(products):
    products.create_collection("bought_with", "edge")
    ends = ["a", "b", "c"]
    products.upsert_table("bought_with", pa.table({
        "_key": [f"e{i:02d}" for i in range(30)],
        "_from": [f"products/{ends[i % 3]}" for i in range(30)],
        "_to": [f"products/{ends[(i + 1) % 3]}" for i in range(30)]}))
    ranges = products.key_ranges("bought_with", 3)
    assert len(ranges) == 3
    pulled_edges = [(row["_from"], row["_to"]) for key_range in ranges
                    for batch in products.pull_edges_range("bought_with", key_range) for row in batch.to_pylist()]
    assert pulled_edges == [(f"products/{ends[i % 3]}", f"products/{ends[(i + 1) % 3]}") for i in range(30)]
    with pytest.raises(StoreError, match="not an edge collection"):
        products.pull_edges_range("products", (None, None))


def test_get_documents_follows_the_order_of_the_keys_with_none_for_missing(products):
    documents = products.get_documents("products", ["c", "zz", "a", "c"])
    assert [d and d["_key"] for d in documents] == ["c", None, "a", "c"]
    assert products.get_documents("products", []) == []


def test_get_documents_with_attributes_returns_only_those_and_the_system_ones(products):
    products.update_attributes("products", pa.table({"_key": ["a"], "embedding": [[0.5, 0.25]], "price": [1.5]}))
    products.upsert_documents("products", [{"_key": "d", "title": "Drum", "nested": {"x": 1}}])
    a, missing, d = products.get_documents("products", ["a", "zz", "d"], attributes=["price", "nested"])
    assert body(a) == {"_key": "a", "price": 1.5}  # the written-back value, and no title or embedding
    assert a["_id"] == "products/a" and a["_rev"]
    assert missing is None
    assert body(d) == {"_key": "d", "nested": {"x": 1}}


def test_select_keys_by_equality_of_attributes(products):
    assert products.select_keys("products") == ["a", "b", "c"]
    assert products.select_keys("products", {"category": 3}) == ["a", "b"]
    assert products.select_keys("products", {"category": 3.0}) == ["a", "b"]
    assert products.select_keys("products", {"category": "3"}) == []
    assert products.select_keys("products", {"category": 3, "title": "Bell"}) == ["b"]
    assert products.select_keys("products", {"title": "Nothing"}) == []
    assert products.select_keys("products", {"_key": "c"}) == ["c"]


def test_change_marker_grows_with_every_kind_of_write(products):
    markers = [products.change_marker("products")]
    products.upsert_documents("products", [{"_key": "d"}])
    markers.append(products.change_marker("products"))
    products.upsert_table("products", pa.table({"_key": ["e"]}))
    markers.append(products.change_marker("products"))
    products.update_attributes("products", pa.table({"_key": ["a"], "score": [1.0]}))
    markers.append(products.change_marker("products"))
    products.remove_documents("products", ["b"])
    markers.append(products.change_marker("products"))
    assert markers == sorted(set(markers)), markers
    assert products.change_marker("products") == markers[-1]  # reading does not move it


def test_revisions_change_when_a_document_is_replaced_and_only_then(products):
    def revisions():
        return {r["_key"]: r["_rev"] for b in products.pull_revisions("products") for r in b.to_pylist()}

    before = revisions()
    assert sorted(before) == ["a", "b", "c"] and all(isinstance(v, str) for v in before.values())
    products.upsert_documents("products", [{"_key": "a", "title": "Anvil", "category": 3, "price": 9.5}])
    after = revisions()
    assert after["a"] != before["a"]
    assert (after["b"], after["c"]) == (before["b"], before["c"])
    products.remove_documents("products", ["c"])
    assert sorted(revisions()) == ["a", "b"]


# -- indexes, checks, state, graphs ---------------------------------------------------------------------------
def test_create_index_reports_what_became_of_each_definition(products):
    products.create_collection("bought_with", "edge")
    primary = products.create_index("products", {"type": "primary", "fields": ["_key"], "unique": True})
    assert (primary.collection, primary.type, primary.fields) == ("products", "primary", ("_key",))
    assert primary.status == "exists"
    assert products.create_index("bought_with", {"type": "edge", "fields": ["_from", "_to"]}).status == "exists"
    persistent = products.create_index("products", {"type": "persistent", "fields": ["category"], "unique": False})
    assert persistent.fields == ("category",)
    assert persistent.status in ("created", "skipped")
    assert persistent.status == "created" or persistent.reason
    unknown = products.create_index("products", {"type": "no-such-index", "fields": ["title"]})
    assert unknown.status == "skipped" and unknown.reason


def test_dangling_edges_counts_missing_documents_and_missing_collections(products):
    products.create_collection("bought_with", "edge")
    products.upsert_documents(
        "bought_with",
        [
            {"_key": "ok", "_from": "products/a", "_to": "products/b"},
            {"_key": "to_missing", "_from": "products/a", "_to": "products/zz"},
            {"_key": "from_ghost", "_from": "ghosts/x", "_to": "products/c"},
        ],
    )
    dangling = products.dangling_edges("bought_with")
    assert (dangling.collection, dangling.count) == ("bought_with", 2)
    assert sorted(e["_key"] for e in dangling.examples) == ["from_ghost", "to_missing"]
    ends = {(e["_from"], e["_to"]) for e in dangling.examples}
    assert ends == {("products/a", "products/zz"), ("ghosts/x", "products/c")}
    one = products.dangling_edges("bought_with", examples=1)
    assert one.count == 2 and len(one.examples) == 1
    products.remove_documents("bought_with", ["to_missing", "from_ghost"])
    assert products.dangling_edges("bought_with").count == 0


def test_job_state_round_trips_and_is_deleted(store):
    assert store.get_state("restore/products") is None
    store.put_state("restore/products", {"file": "products_1.data.json.gz", "line": 10, "done": ["a"]})
    store.put_state("restore/products", {"file": "products_1.data.json.gz", "line": 20, "done": ["a"]})
    store.put_state("last run", {"at": "2024-05-01T00:00:00Z"})
    assert store.get_state("restore/products")["line"] == 20
    assert store.get_state("last run") == {"at": "2024-05-01T00:00:00Z"}
    store.delete_state("restore/products")
    store.delete_state("restore/products")
    assert store.get_state("restore/products") is None
    assert store.get_state("last run") is not None


def test_job_state_is_not_listed_as_a_collection(store):
    store.put_state("restore/products", {"line": 1})
    assert store.collections() == []


def test_named_graphs_are_created_and_replaced(products):
    products.create_collection("users")
    products.create_collection("bought_with", "edge")
    products.create_collection("rated", "edge")
    products.create_graph(GraphInfo("shop", (EdgeDefinition("bought_with", ("products",), ("products",)),)))
    assert products.graphs() == [GraphInfo("shop", (EdgeDefinition("bought_with", ("products",), ("products",)),))]
    products.create_graph(GraphInfo("shop", (EdgeDefinition("rated", ("users",), ("products",)),)))
    (shop,) = products.graphs()
    assert shop.name == "shop"
    assert [(d.collection, set(d.from_collections), set(d.to_collections)) for d in shop.edge_definitions] == [
        ("rated", {"users"}, {"products"})
    ]


# -- values that look like query text are data ------------------------------------------------------------
def test_hostile_filter_values_and_attribute_names_are_data(products):
    products.upsert_documents("products", [{"_key": "h1", "title": HOSTILE[0]}, {"_key": "h2", "title": HOSTILE[1]}])
    assert products.select_keys("products", {"title": HOSTILE[0]}) == ["h1"]
    assert products.select_keys("products", {"title": HOSTILE[1]}) == ["h2"]
    for hostile in HOSTILE[2:]:
        assert products.select_keys("products", {"title": hostile}) == []
    for hostile in HOSTILE:
        assert products.select_keys("products", {hostile: 1}) == []
        assert products.select_keys("products", {"category": hostile}) == []
    table = pulled(products, "products", {HOSTILE[0]: pa.string()})
    assert table.num_rows == 5 and table.column(HOSTILE[0]).null_count == 5


def test_hostile_keys_are_data(products):
    assert products.get_documents("products", HOSTILE) == [None] * len(HOSTILE)
    assert products.remove_documents("products", HOSTILE) == 0
    with pytest.raises(DocumentNotFound):
        products.update_attributes("products", pa.table({"_key": ["a", HOSTILE[0]], "score": [1.0, 2.0]}))
    assert products.collection("products").count == 3
    assert "score" not in products.get_documents("products", ["a"])[0]
    quoted = "a'OR'1'='1"  # quotes and '=' are allowed in ArangoDB keys
    products.upsert_documents("products", [{"_key": quoted, "title": "quoted"}])
    assert body(products.get_documents("products", [quoted])[0]) == {"_key": quoted, "title": "quoted"}
    assert products.select_keys("products", {"_key": quoted}) == [quoted]
    assert products.remove_documents("products", [quoted]) == 1
    assert products.collection("products").count == 3


def test_hostile_state_keys_are_data(store):
    for n, hostile in enumerate(HOSTILE):
        store.put_state(hostile, {"n": n})
    assert [store.get_state(h) for h in HOSTILE] == [{"n": n} for n in range(len(HOSTILE))]
    store.delete_state(HOSTILE[0])
    assert store.get_state(HOSTILE[0]) is None and store.get_state(HOSTILE[1]) == {"n": 1}


# -- structured filters (the service's `filter`) ----------------------------------------------------------
def filtered(store, *conditions) -> list[str]:
    from graphsvc.store.base import Condition

    return sorted(store.filter_keys("products", [Condition(*c) for c in conditions]))


def test_filter_keys_compares_equality_as_json_values(products):
    assert filtered(products) == ["a", "b", "c"]
    assert filtered(products, ("category", "eq", 3)) == ["a", "b"]
    assert filtered(products, ("category", "eq", 3.0)) == ["a", "b"]
    assert filtered(products, ("category", "eq", "3")) == []
    assert filtered(products, ("category", "ne", 3)) == ["c"]
    assert filtered(products, ("price", "ne", 9.5)) == ["b", "c"]  # a missing attribute is "not equal"
    assert filtered(products, ("_key", "eq", "b")) == ["b"]


def test_filter_keys_membership_and_ranges_match_only_values_of_the_bounds_type(products):
    products.upsert_documents("products", [{"_key": "d", "title": "Drum", "category": "7", "price": "cheap"}])
    assert filtered(products, ("category", "in", [7, 9])) == ["c"]
    assert filtered(products, ("category", "in", ["7"])) == ["d"]
    assert filtered(products, ("category", "in", [])) == []
    assert filtered(products, ("price", "lt", 20)) == ["a"]  # b has no price, d a string one
    assert filtered(products, ("price", "lte", 20)) == ["a", "c"]
    assert filtered(products, ("price", "gt", 9.5)) == ["c"]
    assert filtered(products, ("price", "gte", 9.5), ("price", "lt", 10)) == ["a"]
    assert filtered(products, ("title", "gte", "B"), ("title", "lt", "D")) == ["b", "c"]
    assert filtered(products, ("title", "lt", 5)) == []


def test_filter_keys_sees_written_back_attributes(products):
    products.update_attributes("products", pa.table({"_key": ["a", "c"], "predicted_category": [12, 40]}))
    assert filtered(products, ("predicted_category", "eq", 40)) == ["c"]
    assert filtered(products, ("predicted_category", "lt", 20), ("category", "eq", 3)) == ["a"]


def test_filter_keys_takes_hostile_names_and_values_as_data(products):
    products.upsert_documents("products", [{"_key": "h1", "title": HOSTILE[0]}])
    assert filtered(products, ("title", "eq", HOSTILE[0])) == ["h1"]
    assert filtered(products, ("title", "in", HOSTILE[1:])) == []
    for hostile in HOSTILE:
        assert filtered(products, (hostile, "eq", 1)) == []
        assert filtered(products, (hostile, "lt", "z")) == []
    assert products.collection("products").count == 4
