import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
import torch

from graphsvc.index import knn, similar
from graphsvc.index.faiss_index import VectorIndex
from graphsvc.index.knn import knn_graph, pick_device


def clustered(n, d, clusters=12, spread=0.6, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d))
    return (centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, d))).astype(np.float32)


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_top(x, k):
    scores = unit(x) @ unit(x).T
    np.fill_diagonal(scores, -np.inf)
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def recall(found, exact):
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found.tolist(), exact.tolist())]))


def test_every_rows_top_k_reaches_the_target_recall_against_exact_search():
    x = clustered(3000, 32)
    graph = knn_graph(x, 10, sample=300)
    measured = recall(graph.ids, exact_top(x, 10))
    assert measured >= 0.95
    assert graph.recall_at_k >= knn.TARGET_RECALL
    assert graph.cells == knn.default_cells(3000) and 1 <= graph.probes <= graph.cells
    # fewer comparisons than all pairs: the cells do prune
    assert graph.flops < 2.0 * 3000 * 3000 * 32


def test_lists_are_best_first_true_inner_products_without_the_row_itself():
    x = clustered(3000, 16, seed=1)
    graph = knn_graph(x, 7, sample=300)
    assert graph.ids.shape == graph.scores.shape == (3000, 7)
    assert graph.ids.dtype == np.int64 and graph.scores.dtype == np.float32
    assert not (graph.ids == np.arange(3000)[:, None]).any()
    assert (graph.ids >= 0).all()
    assert all(len(set(row)) == 7 for row in graph.ids.tolist())
    u = unit(x)
    true = np.einsum("nd,nkd->nk", u, u[graph.ids])
    np.testing.assert_allclose(graph.scores, true, atol=1e-5)
    assert (np.diff(graph.scores, axis=1) <= 0).all()


def test_probing_every_cell_is_exact_search():
    x = np.random.default_rng(2).standard_normal((800, 24)).astype(np.float32)
    graph = knn_graph(x, 5, cells=10, probes=10, sample=200)
    np.testing.assert_array_equal(graph.ids, exact_top(x, 5))
    assert graph.recall_at_k == 1.0


def test_calibration_takes_the_fewest_probes_that_reach_the_target_and_reports_what_the_pass_found():
    x = np.random.default_rng(3).standard_normal((2000, 12)).astype(np.float32)  # no clusters: recall grows slowly
    loose = knn_graph(x, 10, target_recall=0.5, sample=300, seed=5)
    strict = knn_graph(x, 10, target_recall=0.98, sample=300, seed=5)
    assert loose.recall_at_k >= 0.5 and strict.recall_at_k >= 0.98
    assert loose.probes < strict.probes
    # one probe fewer would have missed the target
    assert knn_graph(x, 10, probes=strict.probes - 1, sample=300, seed=5).recall_at_k < 0.98
    # the reported recall is that of the lists the pass wrote, on the sampled rows
    rows = np.sort(np.random.default_rng(5).choice(2000, size=300, replace=False))
    assert recall(loose.ids[rows], exact_top(x, 10)[rows]) == pytest.approx(loose.recall_at_k, abs=1e-6)


def test_fewer_rows_than_k_pad_with_minus_one_and_minus_infinity():
    x = np.random.default_rng(4).standard_normal((5, 8)).astype(np.float32)
    graph = knn_graph(x, 10)
    assert graph.ids.shape == (5, 10)
    assert (graph.ids[:, :4] >= 0).all() and (graph.ids[:, 4:] == -1).all()
    assert np.isneginf(graph.scores[:, 4:]).all()
    assert knn_graph(x[:1], 3).ids.tolist() == [[-1, -1, -1]]


def test_cuda_is_chosen_only_when_torch_sees_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device() == torch.device("cuda")
    assert pick_device("cpu") == torch.device("cpu")


def test_the_knn_module_imports_without_faiss_duckdb_or_triton():
    code = ("import sys, graphsvc.index.knn; "
            "print(sorted(m for m in ('faiss', 'duckdb', 'tritonclient') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_large_index_takes_its_lists_from_the_knn_pass_and_its_cells_from_the_pass(monkeypatch):
    x = clustered(2000, 16, seed=6)
    calls = []
    real = knn.knn_graph
    monkeypatch.setattr(knn, "knn_graph", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    monkeypatch.setattr(similar, "KNN_PASS_MIN_ROWS", 1000)
    indexed = similar.index_with_neighbours(x, 5)
    assert calls == [1]
    assert indexed.report["method"] == "block kNN pass" and indexed.report["recall_at_k"] >= 0.95
    exact = exact_top(x, 5)
    assert not (indexed.ids == np.arange(2000)[:, None]).any()
    assert recall(indexed.ids, exact) >= 0.95
    assert (np.diff(indexed.scores, axis=1) <= 0).all()
    # the index is IVF over the pass's cells, searching as many as the pass probed; so a
    # query finds what the pass found for it (its own id aside)
    index = indexed.index
    assert index.kind == "ivf" and index.params == {"nlist": indexed.report["cells"],
                                                    "nprobe": indexed.report["probes"]}
    assert indexed.calibration == {"nprobe": indexed.report["probes"], "recall_at_k": indexed.report["recall_at_k"],
                                   "k": 5, "sample": 1000}
    scores, ids = similar.neighbours_of_rows(index, np.arange(2000), 5)
    assert recall(ids, indexed.ids) >= 0.99
    lists = similar.similar_array(pa.array([f"P{i}" for i in range(2000)]), indexed.ids, indexed.scores).to_pylist()
    assert [int(e["_key"][1:]) for e in lists[7]] == indexed.ids[7].tolist()
    # below the threshold the index is flat and its search exact
    monkeypatch.setattr(similar, "KNN_PASS_MIN_ROWS", 10_000)
    small = similar.index_with_neighbours(x, 5)
    assert calls == [1]
    assert small.report == {"method": "index search per row", "index": "flat", "nprobe": None, "recall_at_k": 1.0}
    np.testing.assert_array_equal(small.ids, exact)


def test_an_index_built_on_given_centroids_neither_trains_nor_moves_them():
    x = clustered(3000, 8, seed=9)
    graph = knn_graph(x, 5, sample=200)
    index = VectorIndex.build(x, centroids=graph.centroids, nprobe=graph.probes, use_gpu=False)
    import faiss

    ivf = faiss.extract_index_ivf(index.faiss_index)
    np.testing.assert_array_equal(ivf.quantizer.reconstruct_n(0, ivf.nlist), graph.centroids)
    assert index.count == 3000 and index.nprobe == graph.probes
    with pytest.raises(ValueError, match="centroids are only for an IVF index"):
        VectorIndex.build(x, kind="flat", centroids=graph.centroids)
    with pytest.raises(ValueError, match="centroids have dimension 3, the index has dimension 8"):
        VectorIndex.build(x, centroids=np.ones((4, 3), np.float32))


def test_groups_larger_than_a_block_are_split_and_give_the_same_lists(monkeypatch):
    x = clustered(1500, 12, seed=10)
    whole = knn_graph(x, 6, cells=8, probes=3, sample=100)
    monkeypatch.setattr(knn, "BLOCK_SCORES", 1000)  # a few rows per product
    monkeypatch.setattr(knn, "CHUNK_CANDIDATES", 6 * 3 * 50)  # 50 rows per chunk
    split = knn_graph(x, 6, cells=8, probes=3, sample=100)
    np.testing.assert_array_equal(split.ids, whole.ids)
    np.testing.assert_allclose(split.scores, whole.scores, atol=1e-6)
    assert split.flops == whole.flops


def test_cells_are_shared_out_in_proportion_without_exceeding_a_group():
    assert knn._shares(np.array([10, 0, 5, 100, 3]), 20).tolist() == [2, 0, 1, 17, 0]
    assert knn._shares(np.array([50, 50]), 7).sum() == 7
    assert knn._shares(np.array([1, 1, 1]), 3).tolist() == [1, 1, 1]
    assert knn._shares(np.array([1, 9]), 5).tolist() == [1, 4]


def test_two_level_k_means_gives_every_cell_and_nearly_the_flat_objective(monkeypatch):
    x = knn.unit_rows(torch.from_numpy(clustered(20_000, 16, clusters=40, seed=11)))
    flat = knn._kmeans(x, 300, torch.Generator().manual_seed(0))
    monkeypatch.setattr(knn, "FLAT_KMEANS_MAX_CELLS", 100)
    two = knn._kmeans(x, 300, torch.Generator().manual_seed(0))
    assert two.shape == flat.shape == (300, 16)
    assert torch.allclose(two.norm(dim=1), torch.ones(300), atol=1e-5)
    # every cell holds rows, and the rows lie about as close to their centroids
    assert (torch.bincount(knn._probe_lists(x, two, 1)[:, 0], minlength=300) > 0).all()
    def fit(c):
        return (x @ c.T).max(1).values.mean().item()
    assert fit(two) > fit(flat) - 0.01
