"""The index and every row's top k on Ray: the same `Indexed` as
`graphsvc.index.similar.index_with_neighbours`, its work split into partitions.

Recipe (the local one, `graphsvc.index.knn`, cut where the rows are independent):

1. on the driver, the cells: spherical k-means on a sample of the unit rows — the same
   sample, seed and code as the local pass, so the same centroids; they are the IVF
   quantizer, trained once;
2. one task per partition of the rows (contiguous ranges of row numbers), reading the
   vectors put once in the object store: add its rows to a copy of the empty trained IVF
   index (its shard), find each row's own cell, and the exact top k of the calibration
   sample among its rows;
3. on the driver: the exact top k of the sample (the tasks' merged), the number of probes
   P calibrated from it as the local pass does; the shards merged in order
   (`IndexIVF.merge_from`) into the index the local path builds; the unit rows put once
   more, in cell order;
4. one task per partition of the rows in cell order: its rows' P nearest cells, then the
   pass over them (`knn._chunk`, the local pass's own step): each row against the members
   of the cells it probes. A row's list depends only on its probes and those cells'
   members, so it is the local one; ranges in cell order keep a task's probes close
   together.

Why merge in memory and not FAISS's on-disk merge (`faiss.contrib.ondisk.merge_ondisk`):
the published artifact is one `faiss.write_index` file that the service loads as it is
(`graphsvc.index.artifacts`); an index on `OnDiskInvertedLists` is an index file plus an
`.ivfdata` file that must stay at the path recorded in it, which the versioned publish
and the service's reload do not handle. The merged index needs the memory of the vectors
once (the local path's too); the on-disk merge is the way when that no longer fits.

Below `similar.KNN_PASS_MIN_ROWS` rows the local path builds an exact flat index and
searches it per row; here too, the per-row search split into partitions.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any

import faiss
import numpy as np
import ray
import torch

from graphsvc.distributed.cluster import task_resources
from graphsvc.index import knn, similar
from graphsvc.index.faiss_index import CALIBRATION_TARGET_RECALL, VectorIndex, l2_normalise
from graphsvc.index.similar import Indexed


def distributed_index_with_neighbours(vectors: np.ndarray, k: int, lists: int | None = None, *, partitions: int,
                                      sample: int = 1000, seed: int = 0,
                                      task_options: dict[str, Any] | None = None) -> Indexed:
    """`index_with_neighbours(vectors, k, lists=lists)` computed by Ray tasks, `partitions`
    of them per step (Ray must be initialised). `task_options` go to every task's
    `.options()` (e.g. {"num_cpus": 4} or {"num_gpus": 1}: a task uses CUDA when it sees it);
    by default a task takes a CPU, or none when no CPU is free (see `_default_options`).
    The report is the local one plus `executor`, `partitions` and the bytes put in the
    object store."""
    if isinstance(partitions, bool) or int(partitions) != partitions or partitions < 1:
        raise ValueError(f"partitions must be a positive integer, got {partitions!r}")
    vectors = np.ascontiguousarray(vectors, np.float32)
    n = len(vectors)
    width = min(lists or k, max(n - 1, 1))
    options = {**_default_options(), **(task_options or {})}
    if n < similar.KNN_PASS_MIN_ROWS or n < 2:
        return _flat(vectors, k, width, min(int(partitions), max(n, 1)), options)
    return _ivf(vectors, width, min(int(partitions), n), sample, seed, options)


# ------------------------------------------------------------------- flat

def _flat(vectors: np.ndarray, k: int, width: int, partitions: int, options: dict) -> Indexed:
    started = time.perf_counter()
    index = VectorIndex.build(vectors, metric="cosine")  # exact: nothing to train or merge
    calibration = index.calibrate_nprobe(k=k)
    if len(vectors) < 2:
        scores, ids = np.full((len(vectors), width), -np.inf, np.float32), np.full((len(vectors), width), -1, np.int64)
        put = 0
    else:
        unit = ray.put(l2_normalise(vectors))
        put = vectors.nbytes
        bounds = _ranges(len(vectors), partitions)
        parts = ray.get([_exact_rows.options(**options).remote(unit, a, b, width) for a, b in bounds])
        del unit
        scores = np.concatenate([p[0] for p in parts])
        ids = np.concatenate([p[1] for p in parts])
    report = {"method": "index search per row", "index": index.kind, "nprobe": index.nprobe, "recall_at_k": 1.0,
              "executor": "ray", "partitions": partitions, "object_store_bytes": put,
              "seconds": {"total": round(time.perf_counter() - started, 2)}}
    return Indexed(index, calibration, scores, ids, report)


@ray.remote
def _exact_rows(unit: np.ndarray, a: int, b: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows a … b-1's top k among all `unit` rows by FAISS's exact search, their own id
    dropped as `VectorIndex.neighbours_of_all` drops it (the last result when it is absent)."""
    scores, ids = faiss.knn(np.ascontiguousarray(unit[a:b]), unit, k + 1, faiss.METRIC_INNER_PRODUCT)
    drop = ids == np.arange(a, b)[:, None]
    drop[~drop.any(axis=1), -1] = True
    keep = ~drop
    scores = np.asarray(scores, np.float32)[keep].reshape(b - a, k)
    ids = np.asarray(ids, np.int64)[keep].reshape(b - a, k)
    scores[ids < 0] = -np.inf
    return scores, ids


# -------------------------------------------------------------------- IVF

def _ivf(vectors: np.ndarray, k: int, partitions: int, sample: int, seed: int, options: dict) -> Indexed:
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    n, d = vectors.shape
    # 1. the cells, as the local pass makes them (same sample, same seed)
    x = knn.unit_rows(torch.from_numpy(vectors))
    cells = min(knn.default_cells(n), n)
    centroids = knn._kmeans(x, cells, torch.Generator(device="cpu").manual_seed(int(seed)))
    centroids_np = centroids.numpy().astype(np.float32)
    quantizer = faiss.IndexFlat(d, faiss.METRIC_INNER_PRODUCT)
    quantizer.add(centroids_np)
    empty = faiss.IndexIVFFlat(quantizer, d, cells, faiss.METRIC_INNER_PRODUCT)
    empty.is_trained = True
    seconds["cells"] = time.perf_counter() - started

    # 2. shards, own cells and the sample's exact top k, a task per range of rows
    mark = time.perf_counter()
    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(sample, n), replace=False))
    queries = x[torch.from_numpy(rows)].numpy()
    raw = ray.put(vectors)
    trained = ray.put(faiss.serialize_index(empty))
    bounds = _ranges(n, partitions)
    first = ray.get([_shard.options(**options).remote(raw, trained, centroids_np, a, b, queries, rows, k)
                     for a, b in bounds])
    del raw, trained
    seconds["shards"] = time.perf_counter() - mark

    # 3. calibration and the merged index on the driver
    mark = time.perf_counter()
    exact = _merge_top(np.concatenate([f["exact_scores"] for f in first], 1),
                       np.concatenate([f["exact_ids"] for f in first], 1), k)
    rows_t = torch.from_numpy(rows)
    probes = knn._calibrate(x, centroids, rows_t, torch.from_numpy(exact), CALIBRATION_TARGET_RECALL)
    seconds["calibrate"] = time.perf_counter() - mark
    mark = time.perf_counter()
    merged = faiss.deserialize_index(first[0]["shard"])
    for part in first[1:]:
        merged.merge_from(faiss.deserialize_index(part["shard"]), 0)  # ids are global already
    faiss.extract_index_ivf(merged).nprobe = min(int(probes), cells)
    index = VectorIndex(merged, "cosine")
    seconds["merge"] = time.perf_counter() - mark

    # 4. the pass, a task per range of rows in cell order
    mark = time.perf_counter()
    own = np.concatenate([f["cells"] for f in first])
    order = np.argsort(own, kind="stable")
    starts = np.zeros(cells + 1, np.int64)
    starts[1:] = np.cumsum(np.bincount(own, minlength=cells))
    in_cells = ray.put(x.numpy()[order])
    passes = ray.get([_pass.options(**options).remote(in_cells, starts, centroids_np, a, b, probes, k)
                      for a, b in _ranges(n, partitions)])
    del in_cells
    best_i = np.concatenate([p[1] for p in passes])
    best_s = np.concatenate([p[0] for p in passes])
    found = np.where(best_i >= 0, order[np.clip(best_i, 0, None)], -1)  # positions → row ids
    rows_of = np.empty(n, np.int64)
    rows_of[order] = np.arange(n)
    scores, ids = best_s[rows_of], found[rows_of]
    scores[ids < 0] = -np.inf
    seconds["pass"] = time.perf_counter() - mark
    seconds["total"] = time.perf_counter() - started

    recall = round(knn.recall_at_k(ids[rows], exact), 4)
    flops = sum(p[2] for p in passes)
    calibration = {"nprobe": int(probes), "recall_at_k": recall, "k": k, "sample": len(rows)}
    report = {"method": "block kNN pass", "recall_at_k": recall, "sample": len(rows), "cells": cells,
              "probes": int(probes), "compared_per_row": round(flops / (2.0 * n * d)),
              "device": passes[0][3], "executor": "ray", "partitions": partitions,
              "object_store_bytes": 2 * vectors.nbytes + sum(len(f["shard"]) for f in first),
              "seconds": {name: round(value, 2) for name, value in seconds.items()}}
    return Indexed(index, calibration, scores, ids, report)


@ray.remote
def _shard(raw: np.ndarray, trained: np.ndarray, centroids: np.ndarray, a: int, b: int, queries: np.ndarray,
           sample_rows: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Rows a … b-1: their shard of the index (the empty trained index with them added
    under their row numbers, serialised), each row's own cell (the local pass's nearest
    centroid), and the sample's exact top k among them (self excluded)."""
    shard = faiss.deserialize_index(trained)
    shard.add_with_ids(l2_normalise(raw[a:b]), np.arange(a, b, dtype=np.int64))
    dev = knn.pick_device()
    with warnings.catch_warnings():  # the object store's arrays are read-only; nothing writes to them
        warnings.simplefilter("ignore", UserWarning)
        x = knn.unit_rows(torch.from_numpy(raw[a:b]).to(dev))
    own = knn._probe_lists(x, torch.from_numpy(centroids).to(dev), 1)[:, 0]
    s = torch.from_numpy(queries).to(dev) @ x.T
    inside = np.flatnonzero((sample_rows >= a) & (sample_rows < b))
    s[torch.from_numpy(inside).to(dev), torch.from_numpy(sample_rows[inside] - a).to(dev)] = -math.inf
    top_s, top_p = torch.topk(s, min(k, b - a), dim=1)
    return {"shard": faiss.serialize_index(shard), "cells": own.cpu().numpy(),
            "exact_scores": top_s.cpu().numpy(), "exact_ids": top_p.cpu().numpy() + a}


@ray.remote
def _pass(in_cells: np.ndarray, starts: np.ndarray, centroids: np.ndarray, a: int, b: int, probes: int,
          k: int) -> tuple[np.ndarray, np.ndarray, float, str]:
    """Positions a … b-1 of the rows in cell order against the members of their `probes`
    nearest cells: (scores, positions) [b - a, k], the products' flops, the device."""
    dev = knn.pick_device()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        x = torch.from_numpy(in_cells).to(dev)
    lists = knn._probe_lists(x[a:b], torch.from_numpy(centroids).to(dev), probes)
    best_s = torch.empty(b - a, k, device=dev)
    best_i = torch.empty(b - a, k, dtype=torch.int64, device=dev)
    step = max(1, knn.CHUNK_CANDIDATES // (probes * k))
    slot_s = torch.empty(min(step, b - a), probes * k, device=dev)
    slot_i = torch.empty(min(step, b - a), probes * k, dtype=torch.int64, device=dev)
    flops = 0.0
    for lo in range(0, b - a, step):
        hi = min(b - a, lo + step)
        flops += knn._chunk(x, starts, lists[lo:hi], a + lo, k, slot_s[: hi - lo], slot_i[: hi - lo])
        top_s, pos = torch.topk(slot_s[: hi - lo], k, dim=1)
        best_s[lo:hi], best_i[lo:hi] = top_s, torch.gather(slot_i[: hi - lo], 1, pos)
    return best_s.cpu().numpy(), best_i.cpu().numpy(), flops, str(dev)


def _default_options() -> dict[str, Any]:
    return task_resources(ray)


def _merge_top(scores: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """The best k ids of each row of candidates ([S, m] scores and ids; -1 where none)."""
    scores = np.where(ids >= 0, scores, -np.inf)
    best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(ids, best, axis=1)
    return np.where(np.take_along_axis(scores, best, axis=1) > -np.inf, top, -1)


def _ranges(n: int, parts: int) -> list[tuple[int, int]]:
    """`parts` contiguous ranges of 0 … n-1, sizes differing by at most one."""
    edges = np.linspace(0, n, parts + 1).round().astype(np.int64)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]
