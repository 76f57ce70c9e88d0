"""The index and top-k lists built by Ray tasks equal the local ones (`index_with_neighbours`)."""

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from graphsvc.distributed.index import distributed_index_with_neighbours  # noqa: E402
from graphsvc.index import similar  # noqa: E402
from graphsvc.index.knn import recall_at_k  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def ray_for_the_module(local_ray):
    """Every test here runs on the module's local Ray (tests/distributed/conftest.py)."""
    yield local_ray


def clustered(n, d, clusters=40, spread=0.7, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d))
    return (centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, d))).astype(np.float32)


@pytest.fixture(scope="module")
def vectors():
    return clustered(20_000, 64)


def test_block_pass_on_three_partitions_gives_the_local_lists_cells_and_index(vectors, monkeypatch):
    monkeypatch.setattr(similar, "KNN_PASS_MIN_ROWS", 10_000)  # 20k rows take the block kNN pass
    local = similar.index_with_neighbours(vectors, 10)
    on_ray = distributed_index_with_neighbours(vectors, 10, partitions=3)

    assert on_ray.report["method"] == local.report["method"] == "block kNN pass"
    assert on_ray.report["partitions"] == 3 and on_ray.report["executor"] == "ray"
    # the same cells, probes and calibration sample → the same calibration
    for key in ("cells", "probes", "sample"):
        assert on_ray.report[key] == local.report[key]
    assert on_ray.calibration["nprobe"] == local.calibration["nprobe"]
    assert abs(on_ray.calibration["recall_at_k"] - local.calibration["recall_at_k"]) <= 0.01
    # the lists: the local ones, scores alike
    assert on_ray.ids.shape == local.ids.shape == (20_000, 10)
    assert not (on_ray.ids == np.arange(20_000)[:, None]).any()
    assert recall_at_k(on_ray.ids, local.ids) >= 0.99
    same = on_ray.ids == local.ids
    np.testing.assert_allclose(on_ray.scores[same], local.scores[same], atol=1e-5)
    # the merged shards are the local index: same size, cells, probes, and answers
    assert on_ray.index.kind == local.index.kind == "ivf"
    assert on_ray.index.count == 20_000 and on_ray.index.params == local.index.params
    queries = clustered(500, 64, seed=7)
    assert recall_at_k(on_ray.index.search(queries, 10)[1], local.index.search(queries, 10)[1]) >= 0.99


def test_exact_search_below_the_pass_threshold_gives_the_local_lists(vectors):
    rows = vectors[:6_000]
    local = similar.index_with_neighbours(rows, 10, lists=12)
    on_ray = distributed_index_with_neighbours(rows, 10, lists=12, partitions=2)
    assert on_ray.index.kind == local.index.kind == "flat"
    assert on_ray.report["method"] == "index search per row" and on_ray.report["partitions"] == 2
    assert on_ray.ids.shape == (6_000, 12)
    assert recall_at_k(on_ray.ids, local.ids) >= 0.99
    np.testing.assert_allclose(on_ray.scores, local.scores, atol=1e-5)
    assert on_ray.calibration == local.calibration


def test_more_partitions_than_rows_and_a_bad_count():
    rows = clustered(3, 8)
    on_ray = distributed_index_with_neighbours(rows, 5, partitions=8)
    assert on_ray.ids.shape == (3, 2) and set(on_ray.ids[0]) == {1, 2}
    with pytest.raises(ValueError, match="partitions must be a positive integer"):
        distributed_index_with_neighbours(rows, 5, partitions=0)


def test_tasks_still_run_while_actors_hold_every_cpu(vectors):
    @ray.remote(num_cpus=1)
    class Holder:
        def ready(self):
            return True

    holders = [Holder.remote() for _ in range(2)]  # as the embed job's Triton actors until its write-back
    ray.get([holder.ready.remote() for holder in holders])
    try:
        rows = vectors[:3_000]
        on_ray = distributed_index_with_neighbours(rows, 10, partitions=2)
        assert recall_at_k(on_ray.ids, similar.index_with_neighbours(rows, 10).ids) >= 0.99
    finally:
        for holder in holders:
            ray.kill(holder)
