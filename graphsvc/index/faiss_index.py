"""A thin, typed wrapper around a FAISS index: build, search, all-pairs top-k, save/load.

Ids are the row numbers of the vectors passed to `VectorIndex.build` (0..N-1); mapping
them to document keys is the job of `graphsvc.index.artifacts`.

Metrics
  cosine  vectors (and queries) are L2-normalised copies, searched by inner product;
          scores are cosine similarities in [-1, 1]; a zero vector scores 0 with everything.
  ip      raw inner product, higher is better.
  l2      squared Euclidean distance, *lower* is better.

Missing results (k larger than what the index can return) have id -1 and a score of
-inf (cosine/ip) or +inf (l2).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from faiss.contrib.evaluation import knn_intersection_measure

METRICS = ("cosine", "ip", "l2")
KINDS = ("auto", "flat", "ivf")

#: below this many vectors "auto" builds an exact flat index
AUTO_FLAT_MAX = 50_000
#: FAISS k-means wants at least ~39 training points per centroid
MIN_POINTS_PER_CENTROID = 39
#: training sample size per centroid (FAISS subsamples to 256/centroid anyway)
TRAIN_POINTS_PER_CENTROID = 64
#: GPU flat/IVF search supports at most this k
GPU_MAX_K = 2048



# The recall@k the jobs calibrate nprobe to on stored vectors. The service's goal is 0.95 on
# queries the calibration never saw: at 1M × 256-d, calibrating to 0.95 chose nprobe 8 and
# measured 0.940 on 1,000 fresh keys; 0.97 chose nprobe 32 and measured 0.964
# (bench/service_latency.py).
CALIBRATION_TARGET_RECALL = 0.97


def _check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    return metric


def _faiss_metric(metric: str) -> int:
    return faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT


def _as_matrix(x: Any, name: str, dim: int | None = None) -> np.ndarray:
    """A C-contiguous float32 [n, d] matrix; a 1-D input becomes one row."""
    arr = np.asarray(x)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 1-D or 2-D array, got shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{name} have dimension {arr.shape[1]}, the index has dimension {dim}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if arr.size and not np.isfinite(arr).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return arr


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Row-wise L2-normalised copy (float32); zero rows stay zero (no NaN)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))  # no [N, d] temporary
    norms[norms == 0] = 1.0  # zero rows: 0 / 1
    return x / norms[:, None]


def recall_against_exact(found: np.ndarray, exact: np.ndarray, own: np.ndarray, k: int) -> float:
    """Recall@k of approximate results against exact search, for queries that are stored
    vectors: the share of each query's k exact nearest found among its k best answers,
    the query's own id (`own`) left out of both. `found`, `exact`: ids [q, ≥k], -1 = none,
    each exact row complete (own id included when it is among them). 1.0 when there is
    nothing to find."""
    width = min(k, exact.shape[1] - 1)
    if len(exact) == 0 or width < 1:
        return 1.0
    # truth and answers in tables of one width, padded with ids that never match each other
    truth = _others_first(exact, own, width, pad=-2)
    answers = _others_first(found, own, width, pad=-1)
    return float(knn_intersection_measure(truth, answers))


def _others_first(ids: np.ndarray, own: np.ndarray, width: int, pad: int) -> np.ndarray:
    """Each row's ids other than `own` and -1, in their order, cut to `width`, `pad` after them."""
    keep = (ids != own[:, None]) & (ids >= 0)
    order = np.argsort(~keep, axis=1, kind="stable")
    return np.take_along_axis(np.where(keep, ids, pad), order, axis=1)[:, :width]


def default_nlist(n: int) -> int:
    """nlist ≈ 4·sqrt(N), clamped so every centroid gets enough training points."""
    nlist = int(round(4 * math.sqrt(max(n, 1))))
    nlist = min(nlist, max(1, n // MIN_POINTS_PER_CENTROID))
    return max(1, nlist)


def default_nprobe(nlist: int) -> int:
    return max(1, min(nlist, max(8, nlist // 16)))


def _gpu_available() -> bool:
    try:
        return hasattr(faiss, "index_cpu_to_all_gpus") and faiss.get_num_gpus() > 0
    except Exception:  # builds without GPU support may lack get_num_gpus
        return False


def _to_gpu(index: faiss.Index):
    """A GPU replica of a CPU index, or None when no GPU is usable."""
    if not _gpu_available():
        return None
    try:
        return faiss.index_cpu_to_all_gpus(index)
    except Exception:
        return None


class VectorIndex:
    """A FAISS index plus the metadata needed to use it correctly (metric, kind, params)."""

    def __init__(self, index: faiss.Index, metric: str, *, use_gpu: bool | None = None):
        self._index = index  # always the CPU index; this is what gets saved
        self._metric = _check_metric(metric)
        self._ivf = faiss.try_extract_index_ivf(index)
        if self._ivf is None and not isinstance(index, faiss.IndexFlat):
            raise ValueError(f"unsupported FAISS index type {type(index).__name__}")
        if index.metric_type != _faiss_metric(metric):
            want = "L2" if metric == "l2" else "inner product"
            raise ValueError(f"metric {metric!r} needs a FAISS {want} index")
        self._gpu = None
        if use_gpu is None or use_gpu:
            self._gpu = _to_gpu(index)

    # ------------------------------------------------------------------ build

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        metric: str = "cosine",
        kind: str = "auto",
        nlist: int | None = None,
        nprobe: int | None = None,
        seed: int = 0,
        *,
        centroids: np.ndarray | None = None,
        use_gpu: bool | None = None,
    ) -> "VectorIndex":
        """Index `vectors` [N, d]; vector i gets id i.

        kind="auto" builds an exact flat index below AUTO_FLAT_MAX vectors and an
        IVF-Flat index (nlist ≈ 4·sqrt(N), nprobe ≈ nlist/16, at least 8) above.
        `centroids` [nlist, d] (an IVF index; e.g. the cells of `graphsvc.index.knn`)
        are used as they are instead of training.
        """
        _check_metric(metric)
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        x = _as_matrix(vectors, "vectors")
        n, d = x.shape
        if d == 0:
            raise ValueError("vectors must have at least one dimension")
        if metric == "cosine":
            x = l2_normalise(x)
        if kind == "auto":
            kind = "ivf" if n >= AUTO_FLAT_MAX or centroids is not None else "flat"
        if centroids is not None:
            if kind != "ivf":
                raise ValueError("centroids are only for an IVF index")
            centroids = _as_matrix(centroids, "centroids", d)
            nlist = len(centroids)
        fmetric = _faiss_metric(metric)

        if kind == "flat":
            index = faiss.IndexFlat(d, fmetric)
            index.add(x)
            return cls(index, metric, use_gpu=use_gpu)

        if n == 0:
            raise ValueError("cannot build an IVF index from zero vectors")
        if nlist is None:
            nlist = default_nlist(n)
        if not 1 <= nlist <= n:
            raise ValueError(f"nlist must be between 1 and the number of vectors ({n}), got {nlist}")
        if nprobe is None:
            nprobe = default_nprobe(nlist)
        if nprobe < 1:
            raise ValueError(f"nprobe must be positive, got {nprobe}")

        quantizer = faiss.IndexFlat(d, fmetric)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, fmetric)
        index.cp.seed = int(seed)
        n_train = min(n, max(nlist * TRAIN_POINTS_PER_CENTROID, 10_000))
        if centroids is not None:  # trained elsewhere: the quantizer holds them as they are
            quantizer.add(centroids)
            index.is_trained = True
            train = None
        elif n_train < n:
            rng = np.random.default_rng(seed)
            train = x[np.sort(rng.choice(n, size=n_train, replace=False))]
        else:
            train = x
        gpu = _to_gpu(index) if use_gpu is None or use_gpu else None
        if gpu is not None:
            if train is not None:
                gpu.train(train)
            gpu.add(x)
            index = faiss.index_gpu_to_cpu(gpu)
        else:
            if train is not None:
                index.train(train)
            index.add(x)
        faiss.extract_index_ivf(index).nprobe = min(int(nprobe), nlist)
        return cls(index, metric, use_gpu=use_gpu)

    # ------------------------------------------------------------ properties

    @property
    def faiss_index(self) -> faiss.Index:
        """The underlying CPU FAISS index."""
        return self._index

    @property
    def dim(self) -> int:
        return int(self._index.d)

    @property
    def count(self) -> int:
        return int(self._index.ntotal)

    def __len__(self) -> int:
        return self.count

    @property
    def metric(self) -> str:
        return self._metric

    @property
    def kind(self) -> str:
        return "flat" if self._ivf is None else "ivf"

    @property
    def params(self) -> dict[str, int | None]:
        """{"nlist": ..., "nprobe": ...}; both None for a flat index."""
        if self._ivf is None:
            return {"nlist": None, "nprobe": None}
        return {"nlist": int(self._ivf.nlist), "nprobe": int(self._ivf.nprobe)}

    @property
    def nprobe(self) -> int | None:
        return None if self._ivf is None else int(self._ivf.nprobe)

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        if self._ivf is None:
            raise ValueError("nprobe only applies to an IVF index")
        if int(value) < 1:
            raise ValueError(f"nprobe must be positive, got {value}")
        self._ivf.nprobe = min(int(value), int(self._ivf.nlist))
        if self._gpu is not None:
            try:
                faiss.GpuParameterSpace().set_index_parameter(self._gpu, "nprobe", self._ivf.nprobe)
            except Exception:
                self._gpu = None

    def __repr__(self) -> str:
        return (
            f"VectorIndex(kind={self.kind!r}, metric={self.metric!r}, dim={self.dim}, "
            f"count={self.count}, params={self.params})"
        )

    # ---------------------------------------------------------------- search

    def _missing_score(self) -> float:
        return np.inf if self._metric == "l2" else -np.inf

    def _raw_search(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Search already prepared (normalised for cosine) queries."""
        if x.shape[0] == 0:
            return np.empty((0, k), np.float32), np.empty((0, k), np.int64)
        target = self._gpu if (self._gpu is not None and k <= GPU_MAX_K) else self._index
        scores, ids = target.search(x, k)
        scores = np.asarray(scores, dtype=np.float32)
        ids = np.asarray(ids, dtype=np.int64)
        missing = ids < 0
        if missing.any():
            scores[missing] = self._missing_score()
        return scores, ids

    def _prepare_queries(self, queries: Any) -> np.ndarray:
        q = _as_matrix(queries, "queries", self.dim)
        if self._metric == "cosine":
            q = l2_normalise(q)
        return q

    @staticmethod
    def _check_k(k: int) -> int:
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        return int(k)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k for each query row: (scores [q, k] float32, ids [q, k] int64, -1 = missing).

        A 1-D query is treated as a single row (the result is still 2-D).
        """
        k = self._check_k(k)
        return self._raw_search(self._prepare_queries(queries), k)

    def _ensure_direct_map(self) -> None:
        if self._ivf is not None:
            try:
                no_map = self._ivf.direct_map.no()
            except Exception:
                no_map = True
            if no_map:
                self._ivf.make_direct_map(True)

    def _reconstruct_range(self, start: int, stop: int) -> np.ndarray:
        if self._ivf is None:
            return np.asarray(self._index.reconstruct_n(start, stop - start), dtype=np.float32)
        return self.reconstruct_batch(np.arange(start, stop, dtype=np.int64))

    def reconstruct_batch(self, ids: Any) -> np.ndarray:
        """The stored vectors for `ids` (normalised for cosine), as float32 [len(ids), d]."""
        ids = np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))
        if ids.size == 0:
            return np.empty((0, self.dim), np.float32)
        if ids.min() < 0 or ids.max() >= self.count:
            raise IndexError(f"ids must be in [0, {self.count}), got {ids.min()}..{ids.max()}")
        self._ensure_direct_map()
        return np.asarray(self._index.reconstruct_batch(ids), dtype=np.float32).reshape(len(ids), self.dim)

    def sample_with_exact_neighbours(self, k: int, sample: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What recall is measured against: a seeded sample of the stored vectors (ids,
        vectors) and their k+1 nearest by exact search over all stored vectors (ids
        [sample, k+1], the vector's own id among them)."""
        chosen = np.sort(np.random.default_rng(seed).choice(self.count, size=min(sample, self.count), replace=False))
        queries = self.reconstruct_batch(chosen)
        if not len(chosen):
            return chosen, queries, np.empty((0, min(k + 1, self.count)), np.int64)
        exact_index = faiss.IndexFlat(self.dim, self._index.metric_type)
        for start in range(0, self.count, 262_144):  # bounded memory: a block of vectors at a time
            exact_index.add(self._reconstruct_range(start, min(start + 262_144, self.count)))
        _, exact = exact_index.search(queries, min(k + 1, self.count))
        return chosen, queries, exact

    def calibrate_nprobe(self, target_recall: float = CALIBRATION_TARGET_RECALL, k: int = 10, sample: int = 1000,
                         seed: int = 0) -> dict[str, Any]:
        """For an IVF index: the smallest nprobe (8, 16, 32, … up to the default nlist/16)
        whose recall@k on a sample of the stored vectors, against exact search, reaches
        `target_recall`; it becomes the index's nprobe. Exact indexes report recall 1.0.
        Returns what was measured."""
        if self._ivf is None or self.count == 0:
            return {"nprobe": None, "recall_at_k": 1.0, "k": k, "sample": 0}
        chosen, queries, exact = self.sample_with_exact_neighbours(k, sample, seed)
        # never wider than the default: when the data does not cluster, an IVF index
        # cannot reach the target at a sensible cost, and the recall says so
        widest = max(8, default_nprobe(self._ivf.nlist))
        nprobe, measured = min(8, widest), 0.0
        while True:
            self.nprobe = nprobe
            measured = recall_against_exact(self._raw_search(queries, exact.shape[1])[1], exact, chosen, k)
            if measured >= target_recall or nprobe >= widest:
                break
            nprobe = min(widest, nprobe * 2)
        return {"nprobe": nprobe, "recall_at_k": round(measured, 4), "k": k, "sample": len(chosen)}

    def neighbours_of_all(
        self, k: int, batch_size: int = 4096, exclude_self: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k neighbours of every stored vector: (scores [N, k], ids [N, k]).

        With exclude_self, k+1 results are fetched per row and the row's own id is
        dropped; when it is not among them (ties, IVF misses) the last one is dropped.
        """
        k = self._check_k(k)
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        n = self.count
        fetch = k + 1 if exclude_self else k
        out_scores = np.empty((n, k), np.float32)
        out_ids = np.empty((n, k), np.int64)
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            x = self._reconstruct_range(start, stop)
            scores, ids = self._raw_search(x, fetch)
            if exclude_self:
                own = np.arange(start, stop, dtype=np.int64)[:, None]
                drop = ids == own
                # rows where self was not returned: drop the last (worst) column instead
                drop[~drop.any(axis=1), -1] = True
                # each row now has exactly one column marked; keep the rest in order
                keep = ~drop
                scores = scores[keep].reshape(stop - start, k)
                ids = ids[keep].reshape(stop - start, k)
            out_scores[start:stop] = scores
            out_ids[start:stop] = ids
        return out_scores, out_ids

    # ------------------------------------------------------- incremental updates

    @property
    def supports_updates(self) -> bool:
        """Whether vectors can be removed and added by id in place (IVF: the trained
        centroids stay and vectors move between inverted lists). A flat index is simply
        rebuilt from all vectors — a copy, no training — so it reports False."""
        return self._ivf is not None

    def update(self, remove_ids: np.ndarray, add_ids: np.ndarray, add_vectors: np.ndarray) -> None:
        """Remove `remove_ids`, then add `add_vectors` under `add_ids` (ids may be ones
        just removed: that replaces a vector). The caller keeps ids 0..count-1 dense."""
        if not self.supports_updates:
            raise ValueError(f"a {self.kind} index cannot be updated in place; rebuild it")
        remove_ids = np.ascontiguousarray(np.asarray(remove_ids, np.int64).reshape(-1))
        add_ids = np.ascontiguousarray(np.asarray(add_ids, np.int64).reshape(-1))
        x = _as_matrix(add_vectors, "vectors", self.dim) if len(add_ids) else np.empty((0, self.dim), np.float32)
        if len(x) != len(add_ids):
            raise ValueError(f"{len(add_ids)} ids for {len(x)} vectors")
        if self._metric == "cosine":
            x = l2_normalise(x)
        # a hashtable direct map allows removals and arbitrary ids (an array one does not)
        if self._ivf.direct_map.type != faiss.DirectMap.Hashtable:
            self._ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
        if remove_ids.size:
            self._index.remove_ids(remove_ids)
        if add_ids.size:
            self._index.add_with_ids(x, add_ids)
        self._gpu = _to_gpu(self._index) if self._gpu is not None else None

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """Stored vectors by id (normalised for cosine)."""
        return self.reconstruct_batch(ids)

    def range_search(self, queries: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every stored vector scoring better than `radius` against each query:
        (limits [q+1], scores, ids) in FAISS's layout — the results of query i are
        `scores[limits[i]:limits[i+1]]`. Cosine/ip: score > radius; l2: distance < radius."""
        q = self._prepare_queries(queries)
        if q.shape[0] == 0:
            return np.zeros(1, np.int64), np.empty(0, np.float32), np.empty(0, np.int64)
        limits, scores, ids = self._index.range_search(q, float(radius))
        return np.asarray(limits, np.int64), np.asarray(scores, np.float32), np.asarray(ids, np.int64)

    # ------------------------------------------------------------ save/load

    def save(self, path: str | os.PathLike) -> None:
        """Write the CPU index with faiss.write_index (metric is recorded by the caller)."""
        faiss.write_index(self._index, os.fspath(path))

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        metric: str | None = None,
        *,
        nprobe: int | None = None,
        use_gpu: bool | None = None,
    ) -> "VectorIndex":
        """Read an index written by `save`.

        FAISS only records L2 vs inner product, so pass the metric recorded at build
        time; without it an inner-product index is assumed to be "cosine".
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no index file at {path}")
        index = faiss.read_index(os.fspath(path))
        if metric is None:
            metric = "l2" if index.metric_type == faiss.METRIC_L2 else "cosine"
        vi = cls(index, metric, use_gpu=use_gpu)
        if nprobe is not None:
            vi.nprobe = nprobe
        return vi
