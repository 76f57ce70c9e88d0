"""Top-k over a loaded index, optionally restricted to the documents a filter allows.

Filtered queries still return k hits whenever k documents match: a small candidate set
(up to EXACT_SUBSET_MAX documents) is searched exactly over its own vectors; a larger one
goes through FAISS with an ID selector (a bitmap of allowed ids), and an IVF index that
returns fewer than k widens its probe (nprobe × 4, up to every list) until it has them.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from graphsvc.index.artifacts import LoadedIndex
from graphsvc.index.faiss_index import l2_normalise
from graphsvc.service.errors import BadRequest

#: candidate sets up to this size are searched exactly over their own vectors
EXACT_SUBSET_MAX = 16_384


@dataclass(frozen=True)
class Candidates:
    """The faiss ids a filter allows, as a sorted array and a FAISS bitmap selector."""

    ids: np.ndarray
    bitmap: np.ndarray
    selector: faiss.IDSelector

    def __len__(self) -> int:
        return len(self.ids)


def candidates(index: LoadedIndex, keys: list[str] | pa.Array) -> Candidates:
    """The faiss ids of `keys` (keys the index does not hold are left out)."""
    keys = pa.array(keys, pa.string()) if not isinstance(keys, pa.Array) else keys
    positions = pc.index_in(keys, value_set=index.keys).drop_null().to_numpy(zero_copy_only=False)
    ids = np.unique(positions.astype(np.int64))
    mask = np.zeros(len(index), dtype=bool)
    mask[ids] = True
    bitmap = np.packbits(mask, bitorder="little")
    selector = faiss.IDSelectorBitmap(len(index), faiss.swig_ptr(bitmap))
    return Candidates(ids, bitmap, selector)


@dataclass(frozen=True)
class Ranked:
    keys: list[str]
    scores: list[float]


def _prepared(index: LoadedIndex, queries: np.ndarray, stored: bool = False) -> np.ndarray:
    vi = index.index
    if stored:  # vectors reconstructed from this index: already float32, finite and normalised
        return queries
    try:
        x = np.asarray(queries, dtype=np.float32)
    except (TypeError, ValueError):
        raise BadRequest("query vectors must be lists of numbers") from None
    if x.ndim == 1:
        x = x.reshape(1, -1)
    if x.ndim != 2 or x.shape[1] != vi.dim:
        raise BadRequest(
            f"query vectors have {x.shape[-1] if x.ndim else 0} dimensions, "
            f"the '{index.manifest.collection}' index has {vi.dim}"
        )
    if not np.isfinite(x).all():
        raise BadRequest("query vectors contain NaN or infinite values")
    x = np.ascontiguousarray(x)
    return l2_normalise(x) if vi.metric == "cosine" else x


def _exact_over(index: LoadedIndex, x: np.ndarray, allowed: Candidates, fetch: int) -> tuple[np.ndarray, np.ndarray]:
    vi = index.index
    vectors = vi.reconstruct_batch(allowed.ids)
    if vi.metric == "l2":
        order_scores = -((x[:, None, :] - vectors[None, :, :]) ** 2).sum(-1)
    else:
        order_scores = x @ vectors.T
    top = np.argpartition(-order_scores, fetch - 1, axis=1)[:, :fetch] if fetch < len(allowed) else \
        np.tile(np.arange(len(allowed)), (len(x), 1))
    chosen = np.take_along_axis(order_scores, top, axis=1)
    order = np.argsort(-chosen, axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    scores = np.take_along_axis(chosen, order, axis=1)
    if vi.metric == "l2":
        scores = -scores
    return scores.astype(np.float32), allowed.ids[top]


def _selected(index: LoadedIndex, x: np.ndarray, allowed: Candidates, fetch: int) -> tuple[np.ndarray, np.ndarray]:
    vi = index.index
    native = vi.faiss_index
    if vi.kind == "flat":
        return native.search(x, fetch, params=faiss.SearchParameters(sel=allowed.selector))
    nlist = int(vi.params["nlist"])
    nprobe = int(vi.nprobe or 1)
    while True:
        scores, ids = native.search(x, fetch, params=faiss.SearchParametersIVF(sel=allowed.selector, nprobe=nprobe))
        if (ids >= 0).sum(axis=1).min() >= fetch or nprobe >= nlist:
            return scores, ids
        nprobe = min(nlist, nprobe * 4)


def top_k(
    index: LoadedIndex,
    queries: np.ndarray,
    k: int,
    exclude: list[int | None] | None = None,
    allowed: Candidates | None = None,
    stored: bool = False,
) -> list[Ranked]:
    """The k best keys and scores per query row. `exclude[i]` is a faiss id left out of
    row i's answer (the document a "similar to" query starts from); `stored` says the
    queries are vectors reconstructed from this index (no checks or normalising needed)."""
    x = _prepared(index, queries, stored)
    excluding = exclude is not None and any(e is not None for e in exclude)
    pool = len(index) if allowed is None else len(allowed)
    fetch = min(k + (1 if excluding else 0), pool)
    if fetch <= 0 or len(x) == 0:
        return [Ranked([], []) for _ in range(len(x))]
    if allowed is None:
        scores, ids = index.index.faiss_index.search(x, fetch)
    elif len(allowed) <= EXACT_SUBSET_MAX:
        scores, ids = _exact_over(index, x, allowed, fetch)
    else:
        scores, ids = _selected(index, x, allowed, fetch)
    answers = []
    for row in range(len(x)):
        own = exclude[row] if exclude is not None else None
        row_ids, row_scores = ids[row], scores[row]
        keep = row_ids >= 0
        if own is not None:
            keep &= row_ids != own
        row_ids, row_scores = row_ids[keep][:k], row_scores[keep][:k]
        answers.append(Ranked(index.keys_at(row_ids), row_scores.tolist()))
    return answers
