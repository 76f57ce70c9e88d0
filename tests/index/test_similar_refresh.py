"""refresh_similar against exact search on real FAISS indexes (flat and IVF)."""

import numpy as np
import pytest

from graphsvc.index.faiss_index import VectorIndex, l2_normalise
from graphsvc.index.similar import (
    _merge_into_windows,
    _windows_from_results,
    neighbours_of_rows,
    pair_scores,
    refresh_similar,
)

K, WINDOW, TOLERANCE = 10, 20, 0.05


def _clustered(n, d, rng):
    centres = rng.normal(size=(40, d))
    return (centres[rng.integers(0, 40, n)] + rng.normal(scale=0.6, size=(n, d))).astype(np.float32)


def _exact_top(unit, k):
    scores = unit @ unit.T
    np.fill_diagonal(scores, -np.inf)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return top, np.take_along_axis(scores, top, axis=1)


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_refreshed_lists_match_exact_search_within_the_tolerance(kind):
    rng = np.random.default_rng(7)
    n, d = 3000, 32
    before = _clustered(n, d, rng)
    index = VectorIndex.build(before, kind=kind, nlist=32 if kind == "ivf" else None,
                              nprobe=32 if kind == "ivf" else None)
    scores, ids = neighbours_of_rows(index, np.arange(n), WINDOW)
    boundary = scores[:, -1].copy()

    after = before.copy()
    far = rng.choice(n, size=60, replace=False)                        # re-embedded far away
    near = np.setdiff1d(rng.choice(n, size=900, replace=False), far)   # nudged a little
    after[far] = before[rng.choice(n, size=len(far))] + rng.normal(scale=0.5, size=(len(far), d)).astype(np.float32)
    after[near] += rng.normal(scale=0.004, size=(len(near), d)).astype(np.float32) * np.linalg.norm(
        before[near], axis=1, keepdims=True)
    unit_before, unit = l2_normalise(before), l2_normalise(after)
    shift = np.linalg.norm(unit - unit_before, axis=1).astype(np.float32)
    assert (shift[near] <= TOLERANCE).all() and (shift[far] > TOLERANCE).all()
    moved = np.flatnonzero(shift > 0)
    if kind == "flat":
        index = VectorIndex.build(after, kind="flat")
    else:
        index.update(moved, moved, after[moved])

    old_ids, old_scores = ids.copy(), scores.copy()
    outcome = refresh_similar(index, unit, ids, scores, boundary, shift, K, TOLERANCE)

    true_top, true_scores = _exact_top(unit, K)
    listed_true = np.take_along_axis(unit @ unit.T, ids[:, :K], axis=1)
    # every listed score is the pair's cosine now, within the score tolerance
    assert np.abs(scores[:, :K] - listed_true).max() <= 1e-3 + 1e-5
    # nothing listed is worse than the true k-th best by more than the stated tolerance
    assert (listed_true.min(axis=1) >= true_scores[:, -1] - 2 * TOLERANCE).all()
    recall = np.mean([len(set(a) & set(b)) / K for a, b in zip(ids[:, :K].tolist(), true_top.tolist())])
    assert recall >= (0.97 if kind == "flat" else 0.93)
    # far movers were looked for again (their windows: what a search gives now)
    assert set(far.tolist()) <= set(outcome["searched"].tolist())
    _, searched_ids = neighbours_of_rows(index, far, WINDOW)
    assert all(set(a) == set(b) for a, b in zip(ids[far].tolist(), searched_ids.tolist()))
    # rows reported unchanged are unchanged
    same = np.setdiff1d(np.arange(n), outcome["changed"])
    assert (ids[same, :K] == old_ids[same, :K]).all() and (scores[same, :K] == old_scores[same, :K]).all()
    assert 0 < len(outcome["changed"]) < n


def _merge_reference(ids, scores, targets, movers, values):
    window = ids.shape[1]
    for row in np.unique(targets):
        pick = targets == row
        merged_ids = np.concatenate([ids[row], movers[pick]])
        merged_scores = np.concatenate([scores[row], values[pick]])
        _, first = np.unique(merged_ids, return_index=True)
        order = first[np.argsort(-merged_scores[first], kind="stable")]
        order = order[merged_ids[order] >= 0][:window]
        ids[row], scores[row] = -1, -np.inf
        ids[row, : len(order)], scores[row, : len(order)] = merged_ids[order], merged_scores[order]


def test_merging_movers_into_windows_equals_the_row_by_row_merge():
    rng = np.random.default_rng(3)
    n, window = 200, 6
    ids = np.stack([rng.choice(n, size=window, replace=False) for _ in range(n)]).astype(np.int64)
    scores = -np.sort(-rng.random((n, window)).astype(np.float32), axis=1)
    ids[::7, -2:], scores[::7, -2:] = -1, -np.inf
    targets = rng.integers(0, n, 500)
    movers = rng.integers(0, n, 500)
    values = rng.random(500).astype(np.float32)
    values[::5] = np.round(values[::5], 1)  # ties
    expected_ids, expected_scores = ids.copy(), scores.copy()
    _merge_reference(expected_ids, expected_scores, targets, movers, values)
    _merge_into_windows(ids, scores, targets, movers, values)
    assert (ids == expected_ids).all()
    assert (scores == expected_scores).all()


def test_windows_from_range_results_are_each_rows_best_when_it_has_enough():
    rng = np.random.default_rng(5)
    owners = np.repeat(np.array([7, 3, 9]), [5, 2, 4])  # grouped as FAISS returns them
    found_ids = rng.permutation(100)[: len(owners)]
    found = rng.random(len(owners)).astype(np.float32)
    rows, scores, ids = _windows_from_results(owners, found_ids, found, 3)
    assert rows.tolist() == [7, 9]  # row 3 has only 2 results: it must be searched
    for row, got_scores, got_ids in zip(rows, scores, ids):
        mine = np.flatnonzero(owners == row)
        best = mine[np.argsort(-found[mine])][:3]
        assert got_ids.tolist() == found_ids[best].tolist()
        assert np.allclose(got_scores, found[best])
    assert _windows_from_results(owners[:0], found_ids[:0], found[:0], 3)[0].size == 0


def test_pair_scores_are_the_inner_products_of_each_row_with_its_entries():
    rng = np.random.default_rng(8)
    vectors = l2_normalise(rng.standard_normal((300, 16)).astype(np.float32))
    rows = np.array([4, 0, 299, 17])
    entries = rng.integers(0, 300, (4, 5))
    entries[1, 2] = entries[3, 0] = -1
    scores = pair_scores(vectors, rows, entries)
    expected = np.where(entries >= 0, np.einsum("rd,rkd->rk", vectors[rows], vectors[np.maximum(entries, 0)]), -np.inf)
    assert np.isneginf(scores[entries < 0]).all()
    np.testing.assert_allclose(scores, expected, atol=1e-6)
    assert pair_scores(vectors, rows[:0], entries[:0]).shape == (0, 5)


def test_far_movers_searched_a_chunk_at_a_time_give_the_same_lists():
    rng = np.random.default_rng(11)
    n, d = 2000, 16
    before = _clustered(n, d, rng)
    index = VectorIndex.build(before, kind="ivf", nlist=16, nprobe=16)
    scores, ids = neighbours_of_rows(index, np.arange(n), WINDOW)
    after = before.copy()
    far = rng.choice(n, size=50, replace=False)
    after[far] = before[rng.choice(n, size=len(far))] + rng.normal(scale=0.5, size=(len(far), d)).astype(np.float32)
    unit = l2_normalise(after)
    shift = np.linalg.norm(unit - l2_normalise(before), axis=1).astype(np.float32)
    index.update(far, far, after[far])
    results = []
    for range_chunk in (1024, 7):  # all far movers in one search, or in 8 searches
        lists = ids.copy(), scores.copy(), scores[:, -1].copy()
        outcome = refresh_similar(index, unit, *lists, shift, K, TOLERANCE, range_chunk=range_chunk)
        results.append((lists, outcome))
    (one, one_outcome), (chunked, chunked_outcome) = results
    for a, b in zip(one, chunked):
        np.testing.assert_array_equal(a, b)
    for name in ("searched", "changed"):
        np.testing.assert_array_equal(one_outcome[name], chunked_outcome[name])
    assert len(one_outcome["changed"]) > len(far)
