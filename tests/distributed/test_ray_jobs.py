"""The embed jobs on a local Ray (`--executor ray`) give the local executor's results:
embeddings within float tolerance, the same predicted categories, top-10 lists with
recall >= 0.99; a worker killed mid-layer and a driver killed mid-job (products: mid-layer;
movies: mid-texts, whose finished blocks the rerun reuses) change nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from graphsvc.settings import TEST_KILL_AT
from graphsvc.store import open_store
from jobs.embed_movies import EmbedMoviesConfig, embed_movies
from jobs.embed_products import EmbedProductsConfig, embed_products
from jobs.synth import MOVIES_SOURCE, ProductGraphSpec
from tests.jobs.reindex_support import attributes, copy_store, write_graph
from tests.support import REPO_ROOT

pytest.importorskip("ray")

LARGE = ProductGraphSpec(num_products=20_000, num_categories=8, mean_degree=12.0, seed=5)


def run_products(store_path, triton, index_dir, **options) -> dict:
    config = EmbedProductsConfig(**{"layer_batch_size": 4096, **options})
    with open_store(str(store_path)) as store:
        return embed_products(store, triton, index_dir, config)


def assert_same_results(expected: dict, actual: dict, predicted: bool = True) -> None:
    assert expected.keys() == actual.keys()
    keys = sorted(expected)
    np.testing.assert_allclose(np.array([actual[k]["embedding"] for k in keys]),
                               np.array([expected[k]["embedding"] for k in keys]), rtol=1e-4, atol=1e-5)
    if predicted:
        assert [actual[k]["predicted_category"] for k in keys] == [expected[k]["predicted_category"] for k in keys]
    found = sum(len({e["_key"] for e in actual[k]["similar"]} & {e["_key"] for e in expected[k]["similar"]})
                for k in keys)
    assert found / sum(len(expected[k]["similar"]) for k in keys) >= 0.99


@pytest.fixture(scope="module")
def small_graph(tmp_path_factory, ray_triton):
    """The 1,200-product graph and its attributes after a local run."""
    root = tmp_path_factory.mktemp("ray-small")
    write_graph(root / "pristine.duckdb")
    local = copy_store(root / "pristine.duckdb", root / "local.duckdb")
    run_products(local, ray_triton, root / "local-indexes")
    return root, attributes(local)


def test_products_on_ray_equal_the_local_run_with_halos_shuffled_and_a_worker_killed(
        local_ray, ray_triton, tmp_path, monkeypatch):
    write_graph(tmp_path / "local.duckdb", LARGE)
    copy_store(tmp_path / "local.duckdb", tmp_path / "ray.duckdb")
    run_products(tmp_path / "local.duckdb", ray_triton, tmp_path / "local-indexes")
    # the worker computing partition 1 of layer 1 dies once (SIGKILL): Ray restarts it and retries
    monkeypatch.setenv(TEST_KILL_AT.name, "worker:L1-P1")  # forwarded to the workers by the driver
    summary = run_products(tmp_path / "ray.duckdb", ray_triton, tmp_path / "ray-indexes", executor="ray",
                           partitions=3, ray_broadcast=False)

    assert (tmp_path / "ray-indexes" / ".jobs" / "products" / "killed-L1-P1").exists()  # it did die
    assert_same_results(attributes(tmp_path / "local.duckdb"), attributes(tmp_path / "ray.duckdb"))
    ray_report = summary["ray"]
    assert ray_report["partitions"] == 3 and sum(ray_report["owned"]) == LARGE.num_products
    assert all(0 < halo < LARGE.num_products for halo in ray_report["halo"])
    assert [layer["route"] for layer in ray_report["layers"]] == ["shuffle"] * 3
    # layer 0 moves halo rows of 100 floats, layers 1-2 of the 64-wide hidden layers
    assert [layer["bytes_moved"] for layer in ray_report["layers"]] == [
        sum(ray_report["halo"]) * width * 4 for width in (100, 64, 64)]
    assert ray_report["write_back"]["shards"] == 3 and ray_report["write_back"]["rows"] == LARGE.num_products
    # the pull: a read task per key range, the store read-only in the workers
    assert ray_report["pull"]["where"] == "ray" and ray_report["pull"]["node_ranges"] >= 2
    assert summary["batches"] == {"computed": 9, "reused": 0}  # the retried partition counts once


def embed_process(store_path, index_dir, triton_url, ray_address, kill_at=None):
    env = {k: v for k, v in os.environ.items() if k != TEST_KILL_AT.name}
    env["PYTHONPATH"] = str(REPO_ROOT)
    if kill_at:
        env[TEST_KILL_AT.name] = kill_at
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", "--store", str(store_path), "--index-dir", str(index_dir),
         "--triton-url", triton_url, "embed-products", "--layer-batch-size", "256", "--executor", "ray",
         "--ray-address", ray_address, "--partitions", "3", "--json"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )


def test_a_driver_killed_mid_job_reruns_to_the_same_result(local_ray, ray_triton, small_graph, tmp_path):
    root, expected = small_graph
    store_path = copy_store(root / "pristine.duckdb", tmp_path / "store.duckdb")
    # the driver joins the module's Ray, which outlives it (as a cluster outlives a job)
    killed = embed_process(store_path, tmp_path / "indexes", ray_triton.url,
                           local_ray.get_runtime_context().gcs_address, kill_at="embed:4")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    journal = next((tmp_path / "indexes" / ".jobs" / "products").iterdir())
    assert len(list(journal.glob("L*-P*.npy"))) >= 4

    summary = run_products(store_path, ray_triton, tmp_path / "indexes", executor="ray", partitions=3,
                           layer_batch_size=256)
    assert summary["batches"]["reused"] >= 4 and sum(summary["batches"].values()) == 9
    # 1,200 rows of 64 floats fit the object store many times over: the layer is put once
    assert summary["ray"]["layers"][-1]["route"] == "broadcast"
    assert_same_results(expected, attributes(store_path))
    assert not list((tmp_path / "indexes" / ".jobs" / "products").glob("embed-products-*"))


def movie_store(path, count=30):
    """The first `count` sample movies (the sentence encoder on 2 CPU cores is slow)."""
    movies = [json.loads(line) for line in MOVIES_SOURCE.read_text().splitlines()][:count]
    with open_store(str(path), create=True) as store:
        store.create_collection("movies")
        store.upsert_documents("movies", movies)
    return path


def movie_attributes(store_path):
    return {k: {"embedding": v["embedding"], "similar": v["similar"]}
            for k, v in attributes(store_path, "movies").items()}


def test_movies_on_ray_equal_the_local_run_and_a_killed_driver_reruns_only_the_missing_blocks(
        local_ray, ray_triton, tmp_path):
    local, store_path = movie_store(tmp_path / "local.duckdb"), movie_store(tmp_path / "ray.duckdb")
    with open_store(str(local)) as store:
        embed_movies(store, ray_triton, tmp_path / "local-indexes", EmbedMoviesConfig())
    # the driver dies once the first of the 3 blocks of texts is journaled (RT-B{b})
    env = {k: v for k, v in os.environ.items() if k != TEST_KILL_AT.name}
    env.update({"PYTHONPATH": str(REPO_ROOT), TEST_KILL_AT.name: "embed:1"})
    killed = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "--store", str(store_path), "--index-dir", str(tmp_path / "indexes"),
         "--triton-url", ray_triton.url, "embed-movies", "--batch-size", "16", "--executor", "ray",
         "--ray-address", local_ray.get_runtime_context().gcs_address, "--partitions", "3", "--json"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    journal = next((tmp_path / "indexes" / ".jobs" / "movies").iterdir())
    assert len(list(journal.glob("RT-B*.npz"))) == 1

    with open_store(str(store_path)) as store:
        summary = embed_movies(store, ray_triton, tmp_path / "indexes",
                               EmbedMoviesConfig(executor="ray", partitions=3, batch_size=16))
    assert summary["batches"] == {"computed": 2, "reused": 1}  # only the missing blocks went to Ray
    assert summary["ray"]["write_back"]["shards"] == 3
    # the texts: a read task per key range, the store read-only in the workers
    assert summary["ray"]["pull"]["where"] == "ray" and summary["ray"]["pull"]["ranges"] >= 2
    assert summary["embedded"] == 30 and summary["skipped_without_text"] == 0
    assert_same_results(movie_attributes(local), movie_attributes(store_path), predicted=False)
    assert not journal.exists()
