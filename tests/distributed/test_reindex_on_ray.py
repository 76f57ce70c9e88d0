"""`jobs reindex --executor ray` gives the local reindex's results: from identical copies
of a re-indexed store and its index directory, after the same changes, the same rows
recomputed per layer, embeddings within float tolerance, the same predicted categories,
top-10 lists with recall >= 0.99 — with each partition's rows routed to it (and a worker
killed once mid-layer) or the layer's input broadcast; and for movies' changed texts."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from graphsvc.incremental.snapshot import Snapshot
from graphsvc.settings import TEST_KILL_AT
from graphsvc.store import open_store
from graphsvc.store.arango import aql
from jobs.cli import cli
from jobs.reindex import ReindexConfig, reindex
from jobs.synth import MOVIES_SOURCE, ProductGraphSpec
from tests.distributed.arango_workers import StubAddress, recorded
from tests.distributed.test_ray_jobs import assert_same_results, movie_attributes
from tests.jobs.reindex_support import attributes, change_catalogue, fresh_copy, write_graph

pytest.importorskip("ray")

CATALOGUE = ProductGraphSpec(num_products=3_000, num_categories=8, mean_degree=12.0, seed=5)


def run_reindex(triton, store_path, index_dir, **options) -> dict:
    with open_store(str(store_path)) as store:
        return reindex(store, triton, index_dir, ReindexConfig(**{"layer_batch_size": 512, **options}))


@pytest.fixture(scope="module")
def changed_catalogue(tmp_path_factory, ray_triton):
    """A catalogue re-indexed once (locally), then changed: its store and index directory."""
    root = tmp_path_factory.mktemp("ray-reindex")
    write_graph(root / "store.duckdb", CATALOGUE)
    first = run_reindex(ray_triton, root / "store.duckdb", root / "indexes")
    assert first["mode"] == "full"
    change_catalogue(root / "store.duckdb", share=0.02, seed=1)
    return root


@pytest.fixture(scope="module")
def local_reindex(changed_catalogue, ray_triton, tmp_path_factory):
    """The changed catalogue re-indexed by the local executor: (summary, attributes)."""
    store_path, index_dir = fresh_copy(changed_catalogue, tmp_path_factory.mktemp("local"))
    summary = run_reindex(ray_triton, store_path, index_dir)
    assert summary["mode"] == "incremental" and summary["executor"] == "local"
    return summary, attributes(store_path)


@pytest.mark.parametrize("route", ["route", "broadcast"])
def test_products_reindexed_on_ray_equal_the_local_reindex(local_ray, ray_triton, changed_catalogue, local_reindex,
                                                           route, tmp_path, monkeypatch):
    expected_summary, expected = local_reindex
    store_path, index_dir = fresh_copy(changed_catalogue, tmp_path)
    if route == "route":  # the worker computing partition 1 of layer 1 dies once: Ray restarts it and retries
        monkeypatch.setenv(TEST_KILL_AT.name, "worker:RL1-P1")
    summary = run_reindex(ray_triton, store_path, index_dir, executor="ray", partitions=3,
                          ray_broadcast=route == "broadcast")

    assert summary["executor"] == "ray" and summary["mode"] == "incremental"
    assert summary["recomputed_per_layer"] == expected_summary["recomputed_per_layer"]
    assert 0 < summary["recomputed_per_layer"][0] < CATALOGUE.num_products
    assert summary["index"]["action"] == expected_summary["index"]["action"]
    assert_same_results(expected, attributes(store_path))
    layers = summary["ray"]["layers"]
    assert [layer["route"] for layer in layers] == [route] * 3
    # the pull: a read task per key range of the products and of the co-purchases
    pull = summary["ray"]["pull"]
    assert pull["where"] == "ray" and pull["node_ranges"] >= 2 and pull["edge_ranges"] >= 2
    assert summary["batches"] == {"computed": 9, "reused": 0}  # 3 partitions × 3 layers; a retry counts once
    if route == "route":
        assert (index_dir / ".reindex" / "products" / "killed-RL1-P1").exists()  # it did die
        assert all(layer["bytes_moved"] > 0 for layer in layers)
    else:  # the layer's input for every node, put once: 100 features, then 64-wide hidden layers
        assert [layer["bytes_moved"] for layer in layers] == [CATALOGUE.num_products * w * 4 for w in (100, 64, 64)]
    assert not list((index_dir / ".reindex" / "products").glob("run-*"))  # the journal went with the run


def test_an_index_rebuilt_on_ray_tasks_equals_the_local_rebuild(local_ray, ray_triton, changed_catalogue, tmp_path,
                                                                 monkeypatch):
    """Issue 14 point 4: when the reindex rebuilds the index (here: `rebuild_share` 0), the
    Ray executor builds it and every row's lists on Ray tasks (`index_on_ray`)."""
    from graphsvc.distributed import publish

    built = []
    real = publish.distributed_index_with_neighbours
    monkeypatch.setattr(publish, "distributed_index_with_neighbours",
                        lambda *args, **kwargs: built.append(kwargs) or real(*args, **kwargs))
    (tmp_path / "local").mkdir()
    (tmp_path / "ray").mkdir()
    local_store, local_dir = fresh_copy(changed_catalogue, tmp_path / "local")
    expected = run_reindex(ray_triton, local_store, local_dir, rebuild_share=0.0)
    store_path, index_dir = fresh_copy(changed_catalogue, tmp_path / "ray")
    summary = run_reindex(ray_triton, store_path, index_dir, executor="ray", partitions=2, rebuild_share=0.0)
    assert expected["index"]["action"] == summary["index"]["action"] == "rebuilt"
    assert summary["index"]["kind"] == expected["index"]["kind"]
    assert [call["partitions"] for call in built] == [4]  # on Ray tasks: two partitions per actor
    assert_same_results(attributes(local_store), attributes(store_path))


def test_on_arangodb_the_reindex_write_back_is_ray_workers_writing_each_changed_key_once(
        local_ray, ray_triton, changed_catalogue, local_reindex, tmp_path, monkeypatch):
    """The write-back on ArangoDB (the request harness, opened in each worker; the pull,
    snapshot and revisions stay the real embedded store's): Ray tasks update one shard of
    the changed rows each, one at a time here, every key the local run wrote exactly once
    with the local run's values. The driver dies before the commit; the rerun recomputes
    nothing and sends no update."""
    from graphsvc.distributed import publish

    expected_summary, expected = local_reindex
    before = attributes(changed_catalogue / "store.duckdb")
    store_path, index_dir = fresh_copy(changed_catalogue, tmp_path)

    def on_arango(record_dir):
        (record_dir).mkdir()
        address = StubAddress(str(record_dir))
        monkeypatch.setattr(publish, "ray_write_back", lambda store, journal, keys, shards, writers=():
                            publish.StoreWriteBack(address, journal.directory, keys, shards, concurrency=1))

    def killed_before_the_commit(*args, **kwargs):
        raise RuntimeError("killed before the commit")

    on_arango(tmp_path / "first")
    monkeypatch.setattr(Snapshot, "finish", staticmethod(killed_before_the_commit))
    with pytest.raises(RuntimeError, match="killed before the commit"):
        run_reindex(ray_triton, store_path, index_dir, executor="ray", partitions=3, write_batch=100)
    sent = recorded(tmp_path / "first")
    assert [v for request in sent for v in request["violations"]] == []
    updates = [row for r in sent if r["endpoint"] == "/_api/cursor" and r["body"]["query"] == aql.UPDATE_ATTRIBUTES
               for row in r["body"]["bindVars"]["rows"]]
    written = [row["_key"] for row in updates]
    assert 0 < len(written) == len(set(written)) == expected_summary["written"]
    assert {k for k in expected if expected[k] != before[k]} <= set(written)  # all the local run changed
    assert_same_results({k: expected[k] for k in written}, {row["_key"]: row for row in updates})
    assert attributes(store_path) == before  # nothing went to the embedded store

    monkeypatch.undo()
    on_arango(tmp_path / "rerun")
    summary = run_reindex(ray_triton, store_path, index_dir, executor="ray", partitions=3, write_batch=100)
    assert recorded(tmp_path / "rerun") == []
    assert summary["batches"] == {"computed": 0, "reused": 9} and summary["written"] == len(written)
    shards = -(-len(written) // 100)
    assert summary["ray"]["write_back"] == {
        **summary["ray"]["write_back"], "where": "ray", "shards": max(shards, 4), "skipped": max(shards, 4),
        "rows": 0, "writers": 1}


def movie_store(path, count=30):
    """The first `count` sample movies (the sentence encoder on 2 CPU cores is slow)."""
    movies = [json.loads(line) for line in MOVIES_SOURCE.read_text().splitlines()][:count]
    with open_store(str(path), create=True) as store:
        store.create_collection("movies")
        store.upsert_documents("movies", movies)
    return movies


def test_movies_reindexed_on_ray_from_the_command_line_equal_the_local_reindex(local_ray, ray_triton, tmp_path):
    movies = movie_store(tmp_path / "store.duckdb")
    run_reindex(ray_triton, tmp_path / "store.duckdb", tmp_path / "indexes", target="movies")
    with open_store(str(tmp_path / "store.duckdb")) as store:
        store.upsert_documents("movies", [{**m, "description": m["description"] + " Restored in 4K."}
                                          for m in movies[:3]])
    for name in ("local", "ray"):
        (tmp_path / name).mkdir()
        fresh_copy(tmp_path, tmp_path / name)

    expected = run_reindex(ray_triton, tmp_path / "local" / "store.duckdb", tmp_path / "local" / "indexes",
                           target="movies")
    result = CliRunner().invoke(cli, [
        "--store", str(tmp_path / "ray" / "store.duckdb"), "--index-dir", str(tmp_path / "ray" / "indexes"),
        "--triton-url", ray_triton.url, "reindex", "movies", "--executor", "ray", "--partitions", "2", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["executor"] == "ray" and summary["mode"] == "incremental"
    assert summary["recomputed_per_layer"] == expected["recomputed_per_layer"] == [3]
    assert summary["batches"] == {"computed": 1, "reused": 0}
    assert summary["ray"]["pull"]["where"] == "ray" and summary["ray"]["pull"]["ranges"] >= 2
    assert summary["texts_changed"] == expected["texts_changed"] == 3
    assert_same_results(movie_attributes(tmp_path / "local" / "store.duckdb"),
                        movie_attributes(tmp_path / "ray" / "store.duckdb"), predicted=False)
