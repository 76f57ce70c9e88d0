"""Each document's top-k similar documents, as the `similar` attribute written back."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from graphsvc.index.faiss_index import VectorIndex

SIMILAR_TYPE = pa.list_(pa.struct([("_key", pa.string()), ("score", pa.float32())]))


def similar_lists(index: VectorIndex, keys: pa.Array, k: int) -> pa.Array:
    """`[{"_key", "score"}, …]` per row of the index, best first, the item itself excluded."""
    scores, ids = index.neighbours_of_all(k)
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
