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


def refresh_similar(index: VectorIndex, ids: np.ndarray, scores: np.ndarray, moved: np.ndarray,
                    stale: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Bring the similar lists (`ids`/`scores` [N, k], best first, -1/-inf padding) up to
    date after the vectors of rows `moved` changed (or were added), in place; `stale`
    (bool [N]) marks rows whose lists must be recomputed anyway (e.g. they named a
    removed document). Returns the rows whose lists were recomputed:

    - the moved rows themselves and the stale rows;
    - rows whose list names a moved row (its score changed, it may have dropped out);
    - rows for which a moved row now scores above their k-th entry — found by an exact
      scan (flat index) or a FAISS range search at the lowest k-th score (IVF: the
      inverted lists a moved vector probes, as a full search would).

    Every other list is unchanged by the update: none of its entries moved, and no moved
    vector beats its k-th entry."""
    n, k = ids.shape
    refresh = np.asarray(stale, bool).copy()
    moved = np.asarray(moved, np.int64)
    refresh[moved] = True
    if len(moved):
        is_moved = np.zeros(n, bool)
        is_moved[moved] = True
        refresh |= (is_moved[np.where(ids >= 0, ids, 0)] & (ids >= 0)).any(axis=1)
        kth = np.where(ids[:, -1] >= 0, scores[:, -1], -np.inf).astype(np.float32)
        if index.kind == "flat":
            everything = index.vectors(np.arange(n))
            for start in range(0, len(moved), batch_size):
                chunk = moved[start : start + batch_size]
                beats = (everything @ everything[chunk].T) > kth[:, None]
                beats[chunk, np.arange(len(chunk))] = False
                refresh |= beats.any(axis=1)
        else:
            refresh |= ids[:, -1] < 0  # a list that is not full: any vector may join it
            open_rows = ~refresh
            if open_rows.any():
                radius = float(kth[open_rows].min())
                limits, found_scores, found_ids = index.range_search(index.vectors(moved), radius)
                owners = np.repeat(moved, np.diff(limits))
                hit = (found_ids >= 0) & (found_ids != owners)
                hit[hit] = found_scores[hit] > kth[found_ids[hit]]
                refresh[found_ids[hit]] = True
    rows = np.flatnonzero(refresh)
    if len(rows):
        scores[rows], ids[rows] = neighbours_of_rows(index, rows, k)
    return rows
