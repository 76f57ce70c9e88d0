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


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_lists_are_best_first_true_inner_products_without_the_row_itself(precision):
    x = clustered(3000, 16, seed=1)
    graph = knn_graph(x, 7, sample=300, precision=precision)
    assert graph.ids.shape == graph.scores.shape == (3000, 7)
    assert graph.ids.dtype == np.int64 and graph.scores.dtype == np.float32
    assert not (graph.ids == np.arange(3000)[:, None]).any()
    assert (graph.ids >= 0).all()
    assert all(len(set(row)) == 7 for row in graph.ids.tolist())
    u = unit(x)
    true = np.einsum("nd,nkd->nk", u, u[graph.ids])
    np.testing.assert_allclose(graph.scores, true, atol=1e-5)
    assert (np.diff(graph.scores, axis=1) <= 0).all()


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_probing_every_cell_is_exact_search(precision):
    # bfloat16 compares coarsely but keeps 2k candidates and re-scores them in float32
    x = np.random.default_rng(2).standard_normal((800, 24)).astype(np.float32)
    graph = knn_graph(x, 5, cells=10, probes=10, sample=200, precision=precision)
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


def test_an_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be auto, float32 or bfloat16"):
        knn_graph(np.ones((4, 2), np.float32), 1, precision="half")


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


def test_similar_lists_of_a_large_index_come_from_the_knn_pass(monkeypatch):
    x = clustered(2000, 16, seed=6)
    index = VectorIndex.build(x, kind="ivf", nlist=20, use_gpu=False)
    keys = pa.array([f"P{i}" for i in range(2000)])
    calls = []
    real = knn.knn_graph
    monkeypatch.setattr(knn, "knn_graph", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    monkeypatch.setattr(similar, "KNN_PASS_MIN_ROWS", 1000)
    lists, report = similar.similar_lists(index, keys, 5)
    lists = lists.to_pylist()
    assert calls == [1]
    assert report["method"] == "block kNN pass" and report["recall_at_k"] >= 0.95
    exact = exact_top(x, 5)
    found = np.array([[int(e["_key"][1:]) for e in row] for row in lists])
    assert not (found == np.arange(2000)[:, None]).any()
    assert recall(found, exact) >= 0.95
    scores = np.array([[e["score"] for e in row] for row in lists])
    assert (np.diff(scores, axis=1) <= 0).all()
    # below the threshold the index answers, as before
    monkeypatch.setattr(similar, "KNN_PASS_MIN_ROWS", 10_000)
    _, report = similar.similar_lists(index, keys, 5)
    assert calls == [1]
    assert report["method"] == "index search per row" and report["index"] == "ivf"


def test_auto_precision_takes_bfloat16_only_for_wide_blocks_where_it_is_fast(monkeypatch):
    x = clustered(1200, 16, seed=7)
    monkeypatch.setattr(knn, "fast_bfloat16", lambda device: True)
    assert knn_graph(x, 5, sample=100).precision == "float32"  # ~hundreds of columns per row
    monkeypatch.setattr(knn, "BFLOAT16_MIN_WIDTH", 0)
    wide = knn_graph(x, 5, sample=100)
    assert wide.precision == "bfloat16" and wide.recall_at_k >= 0.95
    monkeypatch.setattr(knn, "fast_bfloat16", lambda device: False)
    assert knn_graph(x, 5, sample=100).precision == "float32"
    assert knn_graph(x, 5, sample=100, precision="bfloat16").precision == "bfloat16"


def test_auto_precision_keeps_float32_where_bfloat16_cannot_tell_the_neighbours_apart(monkeypatch):
    # one direction with tiny perturbations: every score is within bfloat16's resolution
    # of the others, so a bfloat16 shortlist is a lottery; measured first, it is not used
    rng = np.random.default_rng(8)
    base = rng.standard_normal(32)
    x = (base + 0.03 * rng.standard_normal((1500, 32))).astype(np.float32)
    monkeypatch.setattr(knn, "fast_bfloat16", lambda device: True)
    monkeypatch.setattr(knn, "BFLOAT16_MIN_WIDTH", 0)
    auto = knn_graph(x, 5, sample=200)
    assert auto.precision == "float32" and auto.recall_at_k >= 0.95
    assert "precision_check" in auto.seconds
    forced = knn_graph(x, 5, sample=200, precision="bfloat16")  # asked for: honoured, and its loss shows
    assert forced.precision == "bfloat16" and forced.recall_at_k < auto.recall_at_k
