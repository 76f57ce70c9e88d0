"""Each document's top-k similar documents, as the `similar` attribute written back."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from graphsvc.index.faiss_index import AUTO_FLAT_MAX, CALIBRATION_TARGET_RECALL, VectorIndex

SIMILAR_TYPE = pa.list_(pa.struct([("_key", pa.string()), ("score", pa.float32())]))

#: from this many rows every row's top k comes from the block kNN pass
#: (`graphsvc.index.knn`), not one index query per row: at 200k × 256 it is several
#: times faster for the same recall (bench/knn_pass.py). Below it the index is flat and
#: its search exact.
KNN_PASS_MIN_ROWS = AUTO_FLAT_MAX


@dataclass
class Indexed:
    """A cosine index over some vectors, and every vector's nearest others."""

    index: VectorIndex
    calibration: dict  # {"nprobe", "recall_at_k", "k", "sample"}: how widely the index searches, what it finds
    scores: np.ndarray  # [N, k] float32, best first; -inf where fewer exist
    ids: np.ndarray  # [N, k] int64 row numbers, the row itself excluded; -1 where fewer exist
    report: dict  # how the lists were found (the job summaries' `similar`)


def index_with_neighbours(vectors: np.ndarray, k: int, *, lists: int | None = None) -> Indexed:
    """A cosine `VectorIndex` of `vectors` and each row's top `lists` (default k) others.

    Below KNN_PASS_MIN_ROWS the index is flat and the lists come from its exact search.
    From there the block kNN pass (`graphsvc.index.knn`) makes the lists, calibrated to
    the index's target recall@k, and the IVF index is built on the pass's cells with its
    number of probes: a query searches as the pass did, so the pass's measured recall is
    the index's and neither trains nor calibrates twice."""
    n = len(vectors)
    width = min(lists or k, max(n - 1, 1))
    if n < KNN_PASS_MIN_ROWS:
        index = VectorIndex.build(vectors, metric="cosine")
        # an approximate index searches as widely as it takes to find 97% of the exact top k
        calibration = index.calibrate_nprobe(k=k)
        scores, ids = index.neighbours_of_all(width) if n > 1 else _none(n, width)
        report = {"method": "index search per row", "index": index.kind, "nprobe": index.nprobe,
                  "recall_at_k": 1.0 if index.kind == "flat" else calibration["recall_at_k"]}
        return Indexed(index, calibration, scores, ids, report)
    from graphsvc.index.knn import knn_graph  # torch: only when it is needed

    graph = knn_graph(vectors, width, target_recall=CALIBRATION_TARGET_RECALL)
    index = VectorIndex.build(vectors, metric="cosine", kind="ivf", centroids=graph.centroids, nprobe=graph.probes)
    recall = round(float(graph.recall_at_k), 4)
    calibration = {"nprobe": graph.probes, "recall_at_k": recall, "k": width, "sample": graph.sample}
    report = {"method": "block kNN pass", "recall_at_k": recall, "sample": graph.sample, "cells": graph.cells,
              "probes": graph.probes, "compared_per_row": round(graph.width), "device": graph.device,
              "seconds": {name: round(value, 2) for name, value in graph.seconds.items()}}
    return Indexed(index, calibration, graph.scores, graph.ids, report)


def _none(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((n, k), -np.inf, np.float32), np.full((n, k), -1, np.int64)


def similar_array(keys: pa.Array, ids: np.ndarray, scores: np.ndarray) -> pa.Array:
    """The `similar` lists of rows given as neighbour ids [N, k] (-1: none) and scores."""
    valid = ids >= 0
    flat_ids = ids[valid]
    entries = pa.StructArray.from_arrays(
        [keys.take(pa.array(flat_ids, pa.int64())), pa.array(scores[valid], pa.float32())],
        names=["_key", "score"],
    )
    offsets = np.zeros(len(ids) + 1, np.int32)
    np.cumsum(valid.sum(axis=1), out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), entries).cast(SIMILAR_TYPE)


def embedding_array(embeddings: np.ndarray) -> pa.Array:
    """[N, d] float32 → list<float32> without a Python loop."""
    embeddings = np.ascontiguousarray(embeddings, np.float32)
    n, d = embeddings.shape
    offsets = pa.array(np.arange(0, n * d + 1, d, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(embeddings.reshape(-1)))


def neighbours_of_rows(index: VectorIndex, rows: np.ndarray, k: int, batch_size: int = 4096
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of the stored vectors `rows` (their own id excluded): (scores, ids) [len(rows), k],
    the same lists `VectorIndex.neighbours_of_all` gives for those rows."""
    rows = np.asarray(rows, np.int64)
    out_scores = np.full((len(rows), k), -np.inf, np.float32)
    out_ids = np.full((len(rows), k), -1, np.int64)
    fetch = min(k + 1, max(index.count, 1))
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        scores, ids = index._raw_search(index.vectors(chunk), fetch)
        drop = ids == chunk[:, None]
        drop[~drop.any(axis=1), -1] = True
        keep = ~drop
        width = fetch - 1
        out_scores[start : start + len(chunk), :width] = scores[keep].reshape(len(chunk), width)[:, :k]
        out_ids[start : start + len(chunk), :width] = ids[keep].reshape(len(chunk), width)[:, :k]
    return out_scores, out_ids


def refresh_similar(index: VectorIndex, vectors: np.ndarray, ids: np.ndarray, scores: np.ndarray,
                    boundary: np.ndarray, shift: np.ndarray, k: int, tolerance: float,
                    score_tolerance: float = 1e-3, chunk: int = 65_536, range_chunk: int = 1024
                    ) -> dict[str, np.ndarray]:
    """Bring similar lists up to date after some vectors moved, in place.

    Each row keeps a window of up to k' = ids.shape[1] > k entries (best first, -1 /
    -inf padding) and a `boundary`: the k'-th score when it was last searched, which no
    document outside the window beat then. `vectors` are tonight's unit vectors (row i =
    index id i); `shift` is how far each row's unit vector moved (L2; 0 unchanged, inf
    for a new row). Then:

    1. every entry of a row whose owner or entry moved is re-scored exactly;
    2. each vector that moved by more than `tolerance` is searched (a FAISS range
       search down to the lowest k-th score) and enters the windows it now beats;
    3. entries that fell below their row's boundary leave its window (an unseen
       document could now be ahead of them);
    4. rows left with fewer than k entries above their boundary, rows that moved by
       more than `tolerance` and new rows are searched again (k' entries, a fresh boundary).

    Vectors that moved by at most `tolerance` only change scores (step 1): they may
    miss a window they now belong to by at most that much — the tolerance of the
    lists. A row whose top k keeps its entries in order, each score within
    `score_tolerance`, keeps its old top-k scores (and need not be written again).
    Returns {"searched": rows searched again, "changed": rows whose top k changed}.
    """
    n, window = ids.shape
    before_ids, before_scores = ids.copy(), scores.copy()
    shift = np.asarray(shift, np.float32)
    moved = shift > 0
    # 1. exact scores wherever the owner or an entry moved
    touched = moved | (moved[np.where(ids >= 0, ids, 0)] & (ids >= 0)).any(axis=1)
    rows = np.flatnonzero(touched & np.isfinite(shift))
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        scores[part] = pair_scores(vectors, part, ids[part])
    # 2. far movers join the windows they now beat
    far = np.flatnonzero((shift > tolerance) & np.isfinite(shift))
    own_windows = None
    if len(far) and np.isfinite(boundary).any():
        # down to the lowest boundary of all: a search returns most of the cells it probes,
        # so the movers go a chunk at a time and only what each chunk decides is kept (at
        # 2.45M products, 1% moved, all at once held 22 GB)
        radius = float(boundary[np.isfinite(boundary)].min())
        entering, own = [], []
        for start in range(0, len(far), range_chunk):
            part = far[start : start + range_chunk]
            limits, found, found_ids = index.range_search(vectors[part], radius)
            owners = np.repeat(part, np.diff(limits))
            others = (found_ids >= 0) & (found_ids != owners)
            # the pairs (row, far mover) where the mover now beats the row's boundary
            keep = others & (found > boundary[np.clip(found_ids, 0, n - 1)])
            entering.append((found_ids[keep], owners[keep], found[keep]))
            # the same results are the far movers' own new windows where they hold a full one
            own.append(_windows_from_results(owners[others], found_ids[others], found[others], window))
            del limits, found, found_ids, owners, others, keep
        _merge_into_windows(ids, scores, *(np.concatenate(parts) for parts in zip(*entering)))
        own_windows = tuple(np.concatenate(parts) for parts in zip(*own))
    # 3. keep entries at or above the boundary, best first
    order = np.argsort(-np.where(ids >= 0, scores, -np.inf), axis=1, kind="stable")
    ids[:] = np.take_along_axis(ids, order, axis=1)
    scores[:] = np.take_along_axis(scores, order, axis=1)
    below = (scores < boundary[:, None]) | (ids < 0)
    ids[below], scores[below] = -1, -np.inf
    # 4. search again where fewer than k entries are certain, and for new rows
    certain = (~below).sum(axis=1)
    wanted = min(k, max(index.count - 1, 0))
    # (a far mover's own window is searched again too: every score in it moved)
    again = (certain < wanted) | (shift > tolerance)
    searched = np.flatnonzero(again)
    if own_windows is not None:  # far movers whose range search already gave a full window
        rows_found, found_scores, found_ids = own_windows
        ids[rows_found], scores[rows_found] = found_ids, found_scores
        boundary[rows_found] = found_scores[:, -1]
        again[rows_found] = False
    again = np.flatnonzero(again)
    if len(again):
        scores[again], ids[again] = neighbours_of_rows(index, again, window)
        last = np.where(ids[again, -1] >= 0, scores[again, -1], -np.inf)
        boundary[again] = last
    # what is written back is the top k: where it holds the same entries as before and
    # every score is within score_tolerance of its old one, the old top k stays as it was
    # (order included: entries that swapped places are within 2 × score_tolerance of each
    # other), so the row need not be written again
    keep = _same_top_k_within(ids, scores, before_ids, before_scores, k, score_tolerance)
    ids[keep, :k], scores[keep, :k] = before_ids[keep, :k], before_scores[keep, :k]
    changed = np.flatnonzero((ids[:, :k] != before_ids[:, :k]).any(axis=1)
                             | (scores[:, :k] != before_scores[:, :k]).any(axis=1))
    return {"searched": searched, "changed": changed}


def pair_scores(vectors: np.ndarray, rows: np.ndarray, entries: np.ndarray) -> np.ndarray:
    """Inner products of vectors[rows[i]] with vectors[entries[i, j]] ([len(rows), k]; -inf
    where an entry is -1), without gathering the entries' vectors (FAISS's by-index kernel)."""
    import faiss

    vectors = np.ascontiguousarray(vectors, np.float32)
    queries = np.ascontiguousarray(vectors[rows])
    entries = np.ascontiguousarray(entries, np.int64)
    out = np.empty(entries.shape, np.float32)
    if entries.size:
        faiss.fvec_inner_products_by_idx(faiss.swig_ptr(out), faiss.swig_ptr(queries), faiss.swig_ptr(vectors),
                                         faiss.swig_ptr(entries), vectors.shape[1], len(rows), entries.shape[1])
    return out


def _merge_into_windows(ids: np.ndarray, scores: np.ndarray, targets: np.ndarray, movers: np.ndarray,
                        values: np.ndarray) -> None:
    """Put each (target row, mover, score) into the target row's window, in place: the
    window's entries and the movers, one entry per id (the window's own if listed), best
    first, cut to the window's width. All rows at once: sorts instead of a loop per row."""
    if len(targets) == 0:
        return
    window = ids.shape[1]
    rows = np.unique(targets)
    all_rows = np.concatenate([np.repeat(rows, window), targets])
    all_ids = np.concatenate([ids[rows].ravel(), movers])
    all_scores = np.concatenate([scores[rows].ravel(), values]).astype(np.float32)
    source = np.concatenate([np.zeros(len(rows) * window, np.int8), np.ones(len(targets), np.int8)])
    valid = all_ids >= 0
    all_rows, all_ids, all_scores, source = all_rows[valid], all_ids[valid], all_scores[valid], source[valid]
    # one entry per (row, id): the window's if it lists the id
    order = np.lexsort((source, all_ids, all_rows))
    all_rows, all_ids, all_scores = all_rows[order], all_ids[order], all_scores[order]
    first = np.ones(len(all_rows), bool)
    first[1:] = (all_rows[1:] != all_rows[:-1]) | (all_ids[1:] != all_ids[:-1])
    all_rows, all_ids, all_scores = all_rows[first], all_ids[first], all_scores[first]
    # best first within each row (ties: lower id first), then the first `window` of each
    order = np.lexsort((-all_scores, all_rows))
    all_rows, all_ids, all_scores = all_rows[order], all_ids[order], all_scores[order]
    slot = np.searchsorted(rows, all_rows)
    rank = np.arange(len(all_rows)) - np.searchsorted(all_rows, rows)[slot]
    fits = rank < window
    ids[rows], scores[rows] = -1, -np.inf
    ids[rows[slot[fits]], rank[fits]] = all_ids[fits]
    scores[rows[slot[fits]], rank[fits]] = all_scores[fits]


def _same_top_k_within(ids: np.ndarray, scores: np.ndarray, before_ids: np.ndarray, before_scores: np.ndarray,
                       k: int, tolerance: float) -> np.ndarray:
    """Rows whose top k holds the same entries as before (in any order), each score
    within `tolerance` of its old one."""
    now_order = np.argsort(ids[:, :k], axis=1)
    then_order = np.argsort(before_ids[:, :k], axis=1)
    now_ids = np.take_along_axis(ids[:, :k], now_order, axis=1)
    then_ids = np.take_along_axis(before_ids[:, :k], then_order, axis=1)
    same = (now_ids == then_ids).all(axis=1)
    now_scores = np.take_along_axis(scores[:, :k], now_order, axis=1)
    then_scores = np.take_along_axis(before_scores[:, :k], then_order, axis=1)
    with np.errstate(invalid="ignore"):  # -inf padding on both sides
        gap = np.where(now_ids >= 0, np.abs(now_scores - then_scores), 0.0).max(axis=1) if k else np.zeros(len(ids))
    return np.flatnonzero(same & (gap <= tolerance))


def _windows_from_results(owners: np.ndarray, found_ids: np.ndarray, found: np.ndarray,
                          window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From a range search's results (pairs owner row → found id, score), grouped by
    owner as FAISS returns them: the rows with at least `window` results and their best
    `window`, best first — what a top-`window` search with the same index settings
    returns for them, since every vector above the radius in the lists it probes was
    found. (rows, scores [r, window], ids [r, window])."""
    if not len(owners):
        return np.zeros(0, np.int64), np.zeros((0, window), np.float32), np.zeros((0, window), np.int64)
    starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
    group = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(owners)]))
    # one float key: the group, then the score descending (1 - score lies in [0, 2])
    order = np.argsort(group + (1.0 - found.astype(np.float64)) * 0.25, kind="stable")
    counts = np.diff(np.r_[starts, len(owners)])
    full = counts >= window
    take = order[(starts[full][:, None] + np.arange(window)).reshape(-1)]
    return (owners[starts[full]], found[take].reshape(-1, window).astype(np.float32),
            found_ids[take].reshape(-1, window))
