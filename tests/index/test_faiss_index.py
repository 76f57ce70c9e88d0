import numpy as np
import pytest

from graphsvc.index.faiss_index import (
    VectorIndex,
    default_nlist,
    default_nprobe,
    l2_normalise,
    recall_against_exact,
)


def _unit(x):
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(n > 0, x / np.where(n > 0, n, 1), 0)


def brute_force(base, queries, k, metric="cosine"):
    base = base.astype(np.float64)
    queries = queries.astype(np.float64)
    if metric == "cosine":
        base, queries = _unit(base), _unit(queries)
    if metric == "l2":
        scores = ((queries[:, None, :] - base[None, :, :]) ** 2).sum(-1)
        order = np.argsort(scores, axis=1, kind="stable")[:, :k]
    else:
        scores = queries @ base.T
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


def clustered(n, d, n_clusters, seed, spread=0.15, centre_seed=None):
    """n points around n_clusters Gaussian centres (centres drawn from centre_seed, default seed)."""
    centres = np.random.default_rng(seed if centre_seed is None else centre_seed).standard_normal((n_clusters, d))
    rng = np.random.default_rng([seed, 1])
    labels = rng.integers(0, n_clusters, n)
    return (centres[labels] + spread * rng.standard_normal((n, d))).astype(np.float32)


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_exact_search_matches_brute_force(metric):
    rng = np.random.default_rng(1)
    base = rng.standard_normal((2000, 24)).astype(np.float32)
    queries = rng.standard_normal((50, 24)).astype(np.float32)
    idx = VectorIndex.build(base, metric=metric)
    assert idx.kind == "flat" and idx.metric == metric
    assert idx.count == 2000 and idx.dim == 24
    scores, ids = idx.search(queries, 10)
    assert scores.dtype == np.float32 and ids.dtype == np.int64
    assert scores.shape == ids.shape == (50, 10)
    want_scores, want_ids = brute_force(base, queries, 10, metric)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5 if metric == "cosine" else 1e-3, rtol=1e-5)


def test_one_dimensional_query_and_missing_results():
    rng = np.random.default_rng(2)
    base = rng.standard_normal((5, 8)).astype(np.float32)
    idx = VectorIndex.build(base)
    scores, ids = idx.search(base[3], 8)
    assert ids.shape == (1, 8)
    assert ids[0, 0] == 3
    assert scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert (ids[0, 5:] == -1).all()
    assert np.isneginf(scores[0, 5:]).all()
    assert not np.isnan(scores).any()


def test_bad_inputs():
    idx = VectorIndex.build(np.eye(4, dtype=np.float32))
    with pytest.raises(ValueError):
        idx.search(np.ones((2, 3), np.float32), 1)
    with pytest.raises(ValueError):
        idx.search(np.ones(4, np.float32), 0)
    with pytest.raises(ValueError):
        VectorIndex.build(np.eye(4, dtype=np.float32), metric="hamming")
    with pytest.raises(ValueError):
        VectorIndex.build(np.full((3, 4), np.nan, np.float32))


def test_cosine_zero_vector_has_no_nan():
    base = np.array([[1, 0, 0], [0, 0, 0], [0, 1, 0], [1, 1, 0]], np.float32)
    idx = VectorIndex.build(base, metric="cosine")
    scores, ids = idx.search(base, 4)
    assert not np.isnan(scores).any()
    # the zero vector scores 0 with everything, as a query and as a stored item
    assert np.allclose(scores[1], 0)
    zero_rows = ids == 1
    assert np.allclose(scores[zero_rows], 0)
    nb_scores, nb_ids = idx.neighbours_of_all(2)
    assert not np.isnan(nb_scores).any()
    assert (nb_ids != np.arange(4)[:, None]).all()
    qs, _ = idx.search(np.zeros(3, np.float32), 2)
    assert np.allclose(qs, 0)
    assert not np.isnan(l2_normalise(np.zeros((2, 3), np.float32))).any()


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_neighbours_of_all_excludes_self_and_matches_brute_force(metric):
    rng = np.random.default_rng(3)
    base = rng.standard_normal((300, 16)).astype(np.float32)
    idx = VectorIndex.build(base, metric=metric)
    k = 7
    scores, ids = idx.neighbours_of_all(k, batch_size=64)  # several batches, last one partial
    assert scores.shape == ids.shape == (300, k)
    assert (ids != np.arange(300)[:, None]).all()
    want_scores, want_ids = brute_force(base, base, k + 1, metric)
    want_scores, want_ids = want_scores[:, 1:], want_ids[:, 1:]  # column 0 is self (distinct random rows)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, atol=1e-4, rtol=1e-5)

    # exclude_self=False returns self first
    s2, i2 = idx.neighbours_of_all(k, batch_size=1000, exclude_self=False)
    np.testing.assert_array_equal(i2[:, 0], np.arange(300))


def test_neighbours_of_all_duplicates_drop_self_wherever_it_is():
    # duplicate vectors tie; self may not be first, but must be removed either way
    base = np.array([[1, 0], [1, 0], [1, 0], [0, 1]], np.float32)
    idx = VectorIndex.build(base, metric="cosine")
    _, ids = idx.neighbours_of_all(2)
    assert (ids != np.arange(4)[:, None]).all()
    assert set(ids[0]) == {1, 2}
    # k larger than N-1: padded with -1
    _, ids = idx.neighbours_of_all(5)
    assert (ids[:, 3:] == -1).all()
    assert (ids != np.arange(4)[:, None]).all()


def test_ivf_recall_on_clustered_data():
    n, d = 60_000, 32
    base = clustered(n, d, 200, seed=4, spread=1.0)
    queries = clustered(500, d, 200, seed=5, spread=1.0, centre_seed=4)  # fresh points, same clusters

    ivf = VectorIndex.build(base, metric="cosine", kind="auto", seed=0)
    assert ivf.kind == "ivf"
    assert ivf.params["nlist"] == default_nlist(n) == round(4 * np.sqrt(n))
    assert ivf.params["nprobe"] == default_nprobe(ivf.params["nlist"]) >= 8
    exact = VectorIndex.build(base, metric="cosine", kind="flat")

    _, got = ivf.search(queries, 10)
    _, want = exact.search(queries, 10)
    recall = np.mean([len(set(g) & set(w)) / 10 for g, w in zip(got, want)])
    assert recall >= 0.9, recall

    # neighbours_of_all on IVF uses reconstructed (normalised) vectors and drops self
    sub_scores, sub_ids = ivf.neighbours_of_all(5, batch_size=20_000)
    assert sub_ids.shape == (n, 5)
    assert (sub_ids != np.arange(n)[:, None]).all()
    assert not np.isnan(sub_scores).any()


def test_explicit_ivf_small_and_reconstruct():
    base = clustered(2000, 8, 10, seed=7)
    idx = VectorIndex.build(base, metric="ip", kind="ivf", nlist=16, nprobe=4)
    assert idx.kind == "ivf" and idx.params == {"nlist": 16, "nprobe": 4}
    np.testing.assert_allclose(idx.reconstruct_batch([5, 0, 1999]), base[[5, 0, 1999]], atol=1e-6)
    idx.nprobe = 16  # all lists → exact
    exact = VectorIndex.build(base, metric="ip", kind="flat")
    np.testing.assert_array_equal(idx.search(base[:20], 5)[1], exact.search(base[:20], 5)[1])
    with pytest.raises(ValueError):
        VectorIndex.build(base[:10], kind="ivf", nlist=50)


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_save_load_round_trip(tmp_path, kind):
    base = clustered(3000, 12, 20, seed=8)
    queries = clustered(40, 12, 20, seed=9, centre_seed=8)
    idx = VectorIndex.build(base, metric="cosine", kind=kind, nlist=32 if kind == "ivf" else None)
    path = tmp_path / "index.faiss"
    idx.save(path)
    loaded = VectorIndex.load(path, metric="cosine")
    assert (loaded.kind, loaded.metric, loaded.dim, loaded.count) == (kind, "cosine", 12, 3000)
    assert loaded.params == idx.params
    s1, i1 = idx.search(queries, 10)
    s2, i2 = loaded.search(queries, 10)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(s1, s2)
    n1 = idx.neighbours_of_all(3)
    n2 = loaded.neighbours_of_all(3)
    np.testing.assert_array_equal(n1[1], n2[1])
    with pytest.raises(ValueError):
        VectorIndex.load(path, metric="l2")  # inner-product index, wrong metric


def test_calibrated_nprobe_reaches_the_recall_it_reports():
    n, d = 60_000, 32
    base = clustered(n, d, 200, seed=8, spread=1.0)
    ivf = VectorIndex.build(base, metric="cosine", kind="ivf", nprobe=1, seed=0)
    measured = ivf.calibrate_nprobe(target_recall=0.95, k=10, sample=500, seed=1)
    assert measured["recall_at_k"] >= 0.95
    assert ivf.params["nprobe"] == measured["nprobe"] >= 8
    # the reported recall holds on other stored vectors, against exact search
    exact = VectorIndex.build(base, metric="cosine", kind="flat")
    probe = np.arange(0, n, 97)
    _, got = ivf.search(ivf.reconstruct_batch(probe), 11)
    _, want = exact.search(exact.reconstruct_batch(probe), 11)
    recall = np.mean([len((set(g) - {p}) & (set(w) - {p})) / 10 for p, g, w in zip(probe, got, want)])
    assert recall >= measured["recall_at_k"] - 0.03
    assert VectorIndex.build(base[:100], kind="flat").calibrate_nprobe()["recall_at_k"] == 1.0


def test_recall_against_exact_leaves_the_query_out_and_counts_only_true_neighbours():
    own = np.array([5, 9])
    exact = np.array([[5, 1, 2, 3], [6, 7, 8, 9]])
    # row 0 finds 1 and 2 of {1, 2, 3} (itself and a miss do not count); row 1 finds 6 and 8 of {6, 7, 8}
    found = np.array([[1, 5, -1, 2], [9, 6, 4, 8]])
    assert recall_against_exact(found, exact, own, k=3) == pytest.approx(4 / 6)
    assert recall_against_exact(exact, exact, own, k=3) == 1.0
    # fewer stored vectors than k: the truth is every other vector
    assert recall_against_exact(np.array([[1, -1], [-1, -1]]), np.array([[0, 1], [1, 0]]), np.array([0, 1]),
                                k=10) == 0.5
    assert recall_against_exact(np.array([[0]]), np.array([[0]]), np.array([0]), k=10) == 1.0  # nothing to find


def test_calibration_and_the_evaluation_measure_the_same_recall():
    from types import SimpleNamespace

    from graphsvc.evaluation.ranking import index_recall_at_k

    base = clustered(60_000, 16, 200, seed=4, spread=1.0)
    ivf = VectorIndex.build(base, metric="cosine", kind="ivf", seed=0)
    measured = ivf.calibrate_nprobe(target_recall=0.95, k=10, sample=400, seed=2)
    loaded = SimpleNamespace(index=ivf, version=1, manifest=SimpleNamespace(extra={}))
    evaluated = index_recall_at_k(loaded, k=10, sample=400, seed=2)
    assert evaluated["nprobe"] == measured["nprobe"] and evaluated["sample"] == measured["sample"] == 400
    assert round(evaluated["recall_at_k"], 4) == measured["recall_at_k"]


def test_calibration_stops_at_the_default_width_and_reports_the_recall_it_got():
    # uniform noise does not cluster: no nprobe short of a full scan reaches 95%
    base = np.random.default_rng(9).normal(size=(60_000, 32)).astype(np.float32)
    ivf = VectorIndex.build(base, metric="cosine", kind="ivf", seed=0)
    measured = ivf.calibrate_nprobe(target_recall=0.95, sample=300)
    assert measured["nprobe"] == default_nprobe(ivf.params["nlist"])
    assert measured["recall_at_k"] < 0.95
