"""The store's side of the Ray executor (issue 14): the pull as one read task per key
range, and the write-back on ArangoDB by workers, at most N at once, journaled. The
embedded store is real (its read tasks open the file read-only); ArangoDB is the request
harness, opened inside each worker, whose requests are checked against the manual's schemas."""

from __future__ import annotations

import types

import numpy as np
import pyarrow as pa
import pytest

from graphsvc.distributed.publish import Shard, StoreWriteBack, shard_step
from graphsvc.distributed.pull import pull_node_graph_on_ray
from graphsvc.graph.datasets import load_node_graph
from graphsvc.runs import RunJournal
from graphsvc.store import open_store
from graphsvc.store.arango import aql
from tests.distributed.arango_workers import StubAddress, recorded
from tests.jobs.reindex_support import SPEC, copy_store, write_graph
from tests.store.arango.harness import ArangoStub
from tests.store.arango.routes_store import serve_key_ranges

pytest.importorskip("ray")


def assert_same_graph(expected, actual) -> None:
    assert actual.keys.to_pylist() == expected.keys.to_pylist()
    np.testing.assert_array_equal(actual.features, expected.features)
    np.testing.assert_array_equal(actual.graph.indptr, expected.graph.indptr)
    np.testing.assert_array_equal(actual.graph.indices, expected.graph.indices)
    assert actual.dangling_edges == expected.dangling_edges


def test_the_ray_pull_reads_key_ranges_in_read_only_workers_and_equals_the_local_pull(local_ray, tmp_path):
    write_graph(tmp_path / "pristine.duckdb")
    with open_store(str(copy_store(tmp_path / "pristine.duckdb", tmp_path / "local.duckdb"))) as store:
        local = load_node_graph(store, "products", "bought_together")
    with open_store(str(tmp_path / "pristine.duckdb")) as store:
        pulled, report = pull_node_graph_on_ray(store, "products", "bought_together", readers=2)
        # the driver let go of the file for its readers; its next call opens it again as the writer
        assert store.collection("products").count == SPEC.num_products
    assert report["where"] == "ray" and report["readers"] == 2
    assert report["node_ranges"] == 4 and report["edge_ranges"] == 4
    assert_same_graph(local, pulled)


def test_a_store_no_worker_can_open_is_pulled_on_the_driver(local_ray, tmp_path):
    with open_store(":memory:") as store:
        store.create_collection("products")
        store.create_collection("bought", "edge")
        store.upsert_documents("products", [{"_key": k, "features": [1.0, 2.0]} for k in "ab"])
        store.upsert_documents("bought", [{"_from": "products/a", "_to": "products/b"}])
        pulled, report = pull_node_graph_on_ray(store, "products", "bought")
    assert report["where"] == "driver" and "cannot be opened by another process" in report["reason"]
    assert pulled.keys.to_pylist() == ["a", "b"] and pulled.graph.num_edges == 2


def test_on_arangodb_each_read_task_streams_one_key_range_with_documented_requests(local_ray, tmp_path):
    rng = np.random.default_rng(0)
    products = [{"_key": f"P{i:04d}", "features": rng.normal(size=4).round(3).tolist()} for i in range(400)]
    edges = [{"_key": f"c{i}", "_from": f"products/P{i % 400:04d}", "_to": f"products/P{(7 * i + 1) % 400:04d}"}
             for i in range(900)] + [{"_key": "dangling", "_from": "products/P0001", "_to": "products/gone"}]
    collections = {"products": products, "bought": edges}
    driver = ArangoStub()
    serve_key_ranges(driver, collections)
    address = StubAddress(str(tmp_path), collections, coordinators=2)
    pulled, report = pull_node_graph_on_ray(driver.store(), "products", "bought", readers=1, address=address)

    with open_store(str(tmp_path / "same.duckdb"), create=True) as embedded:
        embedded.create_collection("products")
        embedded.create_collection("bought", "edge")
        embedded.upsert_documents("products", products)
        embedded.upsert_documents("bought", edges)
        expected = load_node_graph(embedded, "products", "bought")
    assert_same_graph(expected, pulled)
    assert pulled.dangling_edges == 1
    # one reader per coordinator: 2 at once, 4 ranges of each collection
    assert report["readers"] == 2 and report["node_ranges"] == 4 and report["edge_ranges"] == 4
    sent = recorded(tmp_path)
    assert [v for request in sent for v in request["violations"]] == []
    opened = [r["body"] for r in sent if r["endpoint"] == "/_api/cursor"]
    assert sorted(b["query"] for b in opened) == sorted(
        [aql.PULL_KEY_RANGE] * 3 + [aql.PULL_KEY_RANGE_FROM] + [aql.PULL_EDGE_RANGE] * 3 + [aql.PULL_EDGE_RANGE_FROM])
    assert all(b["options"]["stream"] is True for b in opened)


def _write_back(tmp_path, shards: int, concurrency: int, done: tuple[int, ...] = ()):
    keys = pa.array([f"P{i:04d}" for i in range(500)])
    rows = np.array_split(np.arange(500), shards)
    rng = np.random.default_rng(1)
    embedding = rng.normal(size=(500, 8)).astype(np.float32)
    indexed = types.SimpleNamespace(ids=np.stack([(np.arange(500) + j) % 500 for j in (1, 2)], axis=1),
                                    scores=np.tile(np.float32([0.9, 0.8]), (500, 1)))
    journal = RunJournal(tmp_path / "journal")
    for number in done:
        journal.mark(shard_step(number), {"rows": 100})
    (tmp_path / "requests").mkdir(exist_ok=True)
    write_back = StoreWriteBack(StubAddress(str(tmp_path / "requests")), journal.directory, keys,
                                [Shard(r, embedding[r], np.eye(3, dtype=np.float32)[r % 3]) for r in rows],
                                concurrency=concurrency)
    write_back(None, "products", indexed)
    return write_back, journal


def test_on_arangodb_workers_update_their_shards_at_most_n_at_once_each_key_once(local_ray, tmp_path):
    write_back, journal = _write_back(tmp_path, shards=5, concurrency=1, done=(0,))
    sent = recorded(tmp_path / "requests")
    assert [v for request in sent for v in request["violations"]] == []
    updates = [r["body"]["bindVars"]["rows"] for r in sent
               if r["endpoint"] == "/_api/cursor" and r["body"]["query"] == aql.UPDATE_ATTRIBUTES]
    written = [row["_key"] for rows in updates for row in rows]
    # shard 0 was journaled by an earlier run: the other 400 keys, each exactly once
    assert sorted(written) == [f"P{i:04d}" for i in range(100, 500)]
    first = next(row for rows in updates for row in rows if row["_key"] == "P0100")
    assert set(first) == {"_key", "embedding", "similar", "predicted_category"}
    assert first["predicted_category"] == 100 % 3 and [s["_key"] for s in first["similar"]] == ["P0101", "P0102"]
    assert write_back.report["skipped"] == 1 and write_back.report["rows"] == 400
    assert write_back.report["writers"] == 1 and write_back.report["peak_writers"] == 1
    assert all(journal.done(shard_step(n)) for n in range(5))

    # a rerun (a driver killed after the write-back) sends nothing
    rerun, _ = _write_back(tmp_path / "again", shards=5, concurrency=2, done=tuple(range(5)))
    assert recorded(tmp_path / "again" / "requests") == [] and rerun.report["skipped"] == 5


def test_the_write_back_is_workers_updating_arangodb_and_parquet_shards_for_the_embedded_store(tmp_path):
    from graphsvc.distributed.publish import ParquetWriteBack, ray_write_back

    journal = RunJournal(tmp_path / "journal")
    keys, shards = pa.array(["a"]), [Shard(np.arange(1), np.zeros((1, 2), np.float32))]
    server = ArangoStub()
    serve_key_ranges(server, {"products": [{"_key": "a"}]})
    on_arango = ray_write_back(server.store(), journal, keys, shards)
    assert isinstance(on_arango, StoreWriteBack) and on_arango.address.url.startswith("arangodb://")
    with open_store(str(tmp_path / "s.duckdb"), create=True) as embedded:
        on_embedded = ray_write_back(embedded, journal, keys, shards)
    assert isinstance(on_embedded, ParquetWriteBack) and on_embedded.directory == journal.directory / "shards"
