"""Each document's top-k similar documents, as the `similar` attribute written back."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from graphsvc.index.faiss_index import VectorIndex

SIMILAR_TYPE = pa.list_(pa.struct([("_key", pa.string()), ("score", pa.float32())]))


def similar_lists(index: VectorIndex, keys: pa.Array, k: int) -> pa.Array:
    """`[{"_key", "score"}, …]` per row of the index, best first, the item itself excluded."""
    scores, ids = index.neighbours_of_all(k)
    return similar_array(keys, ids, scores)


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
                    score_tolerance: float = 1e-3, chunk: int = 4096) -> dict[str, np.ndarray]:
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
        entries = ids[part]
        valid = entries >= 0
        fresh = np.einsum("rd,rkd->rk", vectors[part], vectors[np.where(valid, entries, 0)])
        scores[part] = np.where(valid, fresh, -np.inf)
    # 2. far movers join the windows they now beat
    far = np.flatnonzero((shift > tolerance) & np.isfinite(shift))
    if len(far) and np.isfinite(boundary).any():
        radius = float(boundary[np.isfinite(boundary)].min())
        limits, found, found_ids = index.range_search(vectors[far], radius)
        owners = np.repeat(far, np.diff(limits))
        # the pairs (row, far mover) where the mover now beats the row's boundary
        keep = (found_ids >= 0) & (found_ids != owners) & (found > boundary[np.clip(found_ids, 0, n - 1)])
        targets, movers, values = found_ids[keep], owners[keep], found[keep]
        for row in np.unique(targets):
            pick = targets == row
            merged_ids = np.concatenate([ids[row], movers[pick]])
            merged_scores = np.concatenate([scores[row], values[pick]])
            _, first = np.unique(merged_ids, return_index=True)  # a mover may already be listed
            order = first[np.argsort(-merged_scores[first], kind="stable")]
            order = order[merged_ids[order] >= 0][:window]
            ids[row] = -1
            scores[row] = -np.inf
            ids[row, : len(order)], scores[row, : len(order)] = merged_ids[order], merged_scores[order]
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
    again = np.flatnonzero((certain < wanted) | (shift > tolerance))
    if len(again):
        scores[again], ids[again] = neighbours_of_rows(index, again, window)
        last = np.where(ids[again, -1] >= 0, scores[again, -1], -np.inf)
        boundary[again] = last
    # what is written back is the top k: where its entries and order hold and every score
    # is within score_tolerance, the old scores stay (the row need not be written again)
    same_entries = (ids[:, :k] == before_ids[:, :k]).all(axis=1)
    with np.errstate(invalid="ignore"):  # -inf padding on both sides
        close = np.where(ids[:, :k] >= 0, np.abs(scores[:, :k] - before_scores[:, :k]), 0.0).max(axis=1)
    keep = np.flatnonzero(same_entries & (close <= score_tolerance))
    scores[keep, :k] = before_scores[keep, :k]
    changed = np.flatnonzero((ids[:, :k] != before_ids[:, :k]).any(axis=1)
                             | (scores[:, :k] != before_scores[:, :k]).any(axis=1))
    return {"searched": again, "changed": changed}
