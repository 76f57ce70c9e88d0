"""The top-k of every row at once (a kNN graph), as block matrix products over cells.

Asking an index N separate questions is bound by memory traffic; the same comparisons
done as dense matrix products run at the machine's matrix-multiply rate. The recipe:

1. spherical k-means on a sample puts every (unit) row in the cell of its nearest
   centroid, C ≈ sqrt(N) cells;
2. every row probes the P cells whose centroids are nearest *to the row* (its own first)
   — what an IVF index does for one query;
3. the rows are taken in cell order, a chunk at a time; within a chunk the (row, probed
   cell) pairs are grouped by cell, and each group is one dense product: the rows that
   probe a cell × the cell's members (a contiguous slice). Each group's top k goes into
   the row's slot for that cell; a row's k best of its P slots are its list;
4. P is calibrated before the pass, without searching: a sampled row's exact neighbour
   is found exactly when the neighbour's cell is among the row's P nearest, so recall(P)
   on 1,000 sampled rows follows from the ranks of the neighbours' centroids; the
   smallest P reaching the target recall is used, and the recall of the written lists is
   measured on the same rows.

The cells and P are those of an IVF index over the same rows (`VectorIndex.build(...,
centroids=)`): its per-query search probes the same cells and finds what the pass
found, so the index needs neither training nor calibration of its own.

Measured on the 2.45M trained embeddings of the workshop's catalogue (256-d, 1,565
cells, recall 0.97): probing per row compares each row with ~24k others, probing per
cell (a cell's rows against its nearest cells' members, the pass before this one) with
~91k; bfloat16 products were dropped with that pass — at 2.45M the neighbours' scores lie
closer together than bfloat16 resolves, and its shortlists lost a third of them. HNSW
and NN-descent were not measured: both compare one pair at a time by gathered rows
(memory-bound, like the per-query scans they would replace).

Only torch and numpy are needed (a GPU host may have torch's CUDA build and nothing
else); the same code runs on the CPU or on CUDA, chosen by detection. Memory stays
bounded: one copy of the rows in cell order, the rows' probe lists [N, P], per worker a
chunk's slots and one group's scores, and the [N, k] results.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

#: the recall@k the pass calibrates to; the goal is 0.95, the margin covers rows the
#: sample did not see (the same target as `VectorIndex.calibrate_nprobe`)
TARGET_RECALL = 0.97
#: k-means trains on at most this many sampled rows per cell
TRAIN_ROWS_PER_CELL = 64
KMEANS_ITERATIONS = 12
#: above this many cells k-means runs in two levels (see _kmeans), then this many rounds over all
FLAT_KMEANS_MAX_CELLS = 2048
REFINE_ITERATIONS = 3
#: a worker's chunk holds at most this many (row, slot) candidates: rows × P × k
CHUNK_CANDIDATES = 1 << 22
#: one group's score block holds at most this many scores (rows × cell members)
BLOCK_SCORES = 1 << 22


@dataclass
class KnnGraph:
    """Every row's top k (best first; self excluded; -1 / -inf where fewer exist)."""

    scores: np.ndarray  # [N, k] float32 inner products of the unit rows
    ids: np.ndarray  # [N, k] int64 row numbers
    recall_at_k: float  # of these lists, on `sample` rows, against exact search
    sample: int
    cells: int
    probes: int
    flops: float  # multiply-adds × 2 of the pass's products (k-means and calibration excluded)
    device: str
    centroids: np.ndarray  # [cells, d] float32 unit centroids; row i is in the cell nearest it
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def width(self) -> float:
        """Rows each row was compared with, on average."""
        n, d = self.ids.shape[0], self.centroids.shape[1]
        return self.flops / (2.0 * n * d) if n and d else 0.0


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """`device` if given, else CUDA when torch sees it, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_cells(n: int) -> int:
    """About sqrt(N) cells of ≥ 64 rows. Measured on the 2.45M trained embeddings (recall
    0.97): sqrt(N) = 1,565 cells 377 s; 2·sqrt(N) 371 s (a quarter fewer comparisons, but
    a dearer assignment); 4·sqrt(N) 445 s (smaller, slower products). At 200k, 2·sqrt(N)
    took 14.0 s against 9.3 s (its k-means)."""
    return max(1, min(int(round(math.sqrt(max(n, 1)))), n // 64))


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Row-wise L2-normalised (zero rows stay zero)."""
    norms = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    return x / torch.where(norms > 0, norms, torch.ones_like(norms))


def knn_graph(vectors: np.ndarray | torch.Tensor, k: int, *, target_recall: float = TARGET_RECALL,
              cells: int | None = None, probes: int | None = None, sample: int = 1000, seed: int = 0,
              device: str | torch.device | None = None, normalise: bool = True) -> KnnGraph:
    """Top-k neighbours (inner product; cosine when `normalise`) of every row of
    `vectors` [N, d], the row itself excluded. `probes` fixes P; by default it is
    calibrated to `target_recall` on `sample` rows. Returns a `KnnGraph` whose
    `recall_at_k` is that of the lists written, on `sample` rows, against exact search."""
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    dev = pick_device(device)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    x = torch.as_tensor(vectors)
    if x.ndim != 2:
        raise ValueError(f"vectors must be a 2-D array, got shape {tuple(x.shape)}")
    x = x.to(dev, torch.float32)
    if normalise:
        x = unit_rows(x)
    n, d = x.shape
    k_eff = min(int(k), max(n - 1, 0))
    out_scores = np.full((n, k), -np.inf, np.float32)
    out_ids = np.full((n, k), -1, np.int64)
    if k_eff == 0:
        return KnnGraph(out_scores, out_ids, 1.0, 0, 0, 0, 0.0, str(dev), np.zeros((0, d), np.float32), seconds)

    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    c = min(int(cells or default_cells(n)), n)
    centroids = _kmeans(x, c, gen)
    seconds["cells"] = _clock(dev) - started

    mark = time.perf_counter()
    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(sample, n), replace=False))
    rows_t = torch.as_tensor(rows, device=dev)
    exact = _exact_top(x, rows_t, k_eff)
    probes = _calibrate(x, centroids, rows_t, exact, target_recall) if probes is None else max(1, min(int(probes), c))
    seconds["calibrate"] = _clock(dev) - mark

    mark = time.perf_counter()
    lists = _probe_lists(x, centroids, probes)  # [N, P], the row's own cell first
    order = torch.argsort(lists[:, 0], stable=True)
    starts = np.zeros(c + 1, np.int64)
    starts[1:] = np.cumsum(torch.bincount(lists[:, 0], minlength=c).cpu().numpy())
    lists = lists[order]
    sorted_x = torch.empty_like(x)
    for start in range(0, n, 65_536):
        sorted_x[start : start + 65_536] = x[order[start : start + 65_536]]
    del x  # (the caller's array, when it was unit float32 already, is not freed)
    seconds["lists"] = _clock(dev) - mark

    mark = time.perf_counter()
    best_s, best_i, flops = _pass(sorted_x, starts, lists, k_eff)
    del sorted_x, lists
    best_i = torch.where(best_i >= 0, order[best_i.clamp(min=0)], -1)  # positions → row ids
    rows_of = torch.empty_like(order)
    rows_of[order] = torch.arange(n, device=dev)
    out_scores[:, :k_eff] = best_s[rows_of].cpu().numpy()
    out_ids[:, :k_eff] = best_i[rows_of].cpu().numpy()
    out_scores[out_ids < 0] = -np.inf
    seconds["pass"] = _clock(dev) - mark
    # the recall of the lists written, not the calibration's prediction of it
    recall = recall_at_k(out_ids[rows, :k_eff], exact.cpu().numpy())
    seconds["total"] = time.perf_counter() - started
    return KnnGraph(out_scores, out_ids, recall, len(rows), c, probes, flops, str(dev),
                    centroids.cpu().numpy().astype(np.float32), seconds)


def _clock(device: torch.device) -> float:
    """perf_counter once the device's queued work is done (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each row's exact top k (ids [r, k], -1 = none) found in `found`.
    Not faiss's knn_intersection_measure (`faiss_index.recall_against_exact`): this module
    runs where faiss may be absent."""
    hits = (found[:, :, None] == exact[:, None, :]) & (exact[:, None, :] >= 0)
    wanted = np.maximum((exact >= 0).sum(1), 1)
    return float(np.mean(hits.any(1).sum(1) / wanted)) if len(exact) else 1.0


# ------------------------------------------------------------------ cells

def _kmeans(x: torch.Tensor, cells: int, gen: torch.Generator) -> torch.Tensor:
    """Spherical k-means (unit centroids, nearest by inner product) on a sample of
    TRAIN_ROWS_PER_CELL rows per cell. Hand-written because torch has none and faiss may
    be absent. Each round is one product of the sample with the centroids, so its cost
    grows as cells²; above FLAT_KMEANS_MAX_CELLS it runs in two levels: ~sqrt(cells)
    coarse cells, each split into its share of the cells, then REFINE_ITERATIONS rounds
    over all of them."""
    n = x.shape[0]
    train = x[torch.randperm(n, generator=gen)[: min(n, cells * TRAIN_ROWS_PER_CELL)].to(x.device)]
    if cells <= FLAT_KMEANS_MAX_CELLS:
        return _lloyd(train, _pick(train, cells, gen), KMEANS_ITERATIONS, gen)
    coarse = _lloyd(train, _pick(train, round(math.sqrt(cells)), gen), KMEANS_ITERATIONS, gen)
    group = _probe_lists(train, coarse, 1)[:, 0]
    order = torch.argsort(group, stable=True)
    sizes = torch.bincount(group, minlength=len(coarse)).cpu().numpy()
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    parts = []
    for g, share in enumerate(_shares(sizes, cells)):
        if share:
            members = train[order[bounds[g] : bounds[g + 1]]]
            parts.append(_lloyd(members, _pick(members, int(share), gen), KMEANS_ITERATIONS, gen))
    return _lloyd(train, torch.cat(parts), REFINE_ITERATIONS, gen)


def _pick(rows: torch.Tensor, count: int, gen: torch.Generator) -> torch.Tensor:
    return rows[torch.randperm(rows.shape[0], generator=gen)[:count].to(rows.device)].clone()


def _lloyd(train: torch.Tensor, centroids: torch.Tensor, iterations: int, gen: torch.Generator) -> torch.Tensor:
    for _ in range(iterations):
        assign = _probe_lists(train, centroids, 1)[:, 0]
        sums = torch.zeros_like(centroids).index_add_(0, assign, train)
        empty = torch.bincount(assign, minlength=len(centroids)) == 0
        if empty.any():  # an empty cell restarts at a random training row
            pick = torch.randint(0, train.shape[0], (int(empty.sum()),), generator=gen).to(train.device)
            sums[empty] = train[pick]
        centroids = unit_rows(sums)
    return centroids


def _shares(sizes: np.ndarray, total: int) -> np.ndarray:
    """`total` split in proportion to `sizes` (largest remainders), none above its size."""
    quota = sizes * total / max(int(sizes.sum()), 1)
    share = np.minimum(np.floor(quota).astype(np.int64), sizes)
    for g in np.argsort(-(quota - share), kind="stable"):
        if share.sum() >= total:
            break
        share[g] += share[g] < sizes[g]
    return share


def _probe_lists(x: torch.Tensor, centroids: torch.Tensor, probes: int, chunk: int = 16_384) -> torch.Tensor:
    """Each row's `probes` nearest cells, nearest first: [N, P] int64."""
    out = torch.empty(x.shape[0], probes, dtype=torch.int64, device=x.device)

    def run(first: int, step: int) -> float:
        for start in range(first * chunk, x.shape[0], step * chunk):
            out[start : start + chunk] = torch.topk(x[start : start + chunk] @ centroids.T, probes, dim=1).indices
        return 0.0

    _in_threads(run, x.device)
    return out


def _in_threads(run: Callable[[int, int], float], device: torch.device) -> float:
    """`run(first, step)` over chunks first, first + step, …: on the CPU in one Python
    thread per core, each running torch single-threaded, and the sum of what they return.
    The chunks' products are small, and torch's own threads would wait for each other at
    every one of the operations a chunk takes (measured at 100k × 256 on this project's
    2-core machine: 19 s with 2 torch threads, 4.7 s with a thread per core)."""
    workers = 1 if device.type != "cpu" else max(1, torch.get_num_threads())
    if workers == 1:
        return run(0, 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(workers) as pool:
            return sum(pool.map(lambda first: run(first, workers), range(workers)))
    finally:
        torch.set_num_threads(threads)


# ------------------------------------------------------------------- pass

def _pass(x: torch.Tensor, starts: np.ndarray, lists: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Every row of `x` (in cell order: cell c's members are x[starts[c]:starts[c+1]])
    against the members of the cells in its probe list; positions, not row ids. Chunks
    of rows write disjoint rows, so they run side by side (`_in_threads`)."""
    n = x.shape[0]
    dev = x.device
    probes = lists.shape[1]
    best_s = torch.empty(n, k, device=dev)
    best_i = torch.empty(n, k, dtype=torch.int64, device=dev)
    rows = max(1, CHUNK_CANDIDATES // (probes * k))

    def run(first: int, step: int) -> float:
        slot_s = torch.empty(min(rows, n), probes * k, device=dev)
        slot_i = torch.empty(min(rows, n), probes * k, dtype=torch.int64, device=dev)
        flops = 0.0
        for a in range(first * rows, n, step * rows):
            b = min(n, a + rows)
            flops += _chunk(x, starts, lists[a:b], a, k, slot_s[: b - a], slot_i[: b - a])
            top_s, pos = torch.topk(slot_s[: b - a], k, dim=1)
            best_s[a:b], best_i[a:b] = top_s, torch.gather(slot_i[: b - a], 1, pos)
        return flops

    return best_s, best_i, _in_threads(run, dev)


def _chunk(x: torch.Tensor, starts: np.ndarray, lists: torch.Tensor, first: int, k: int,
           slot_s: torch.Tensor, slot_i: torch.Tensor) -> float:
    """The rows first … first + len(lists) against their probed cells, one dense product
    per cell: slot j of a row (columns j·k … j·k + k - 1) gets its top k in its j-th cell."""
    dev = x.device
    probes = lists.shape[1]
    slot_s.fill_(-math.inf)
    slot_i.fill_(-1)
    pairs = torch.argsort(lists.reshape(-1), stable=True)  # (row, slot) pairs grouped by cell
    cells, counts = torch.unique_consecutive(lists.reshape(-1)[pairs], return_counts=True)
    pair_row, pair_slot = pairs // probes, pairs % probes
    flops = 0.0
    offset = 0
    for cell, count in zip(cells.tolist(), counts.tolist()):
        group_row, group_slot = pair_row[offset : offset + count], pair_slot[offset : offset + count]
        offset += count
        m0, m1 = int(starts[cell]), int(starts[cell + 1])
        if m1 == m0:
            continue
        members = x[m0:m1]
        kk = min(k, m1 - m0)
        step = max(1, BLOCK_SCORES // (m1 - m0))
        for g0 in range(0, count, step):
            local, slot = group_row[g0 : g0 + step], group_slot[g0 : g0 + step]
            position = local + first
            scores = x[position] @ members.T
            flops += 2.0 * scores.numel() * x.shape[1]
            own = torch.nonzero((position >= m0) & (position < m1)).squeeze(1)
            scores[own, position[own] - m0] = -math.inf  # no row meets itself
            top_s, top_p = torch.topk(scores, kk, dim=1)
            columns = (slot * k)[:, None] + torch.arange(kk, device=dev)
            slot_s[local[:, None], columns] = top_s
            slot_i[local[:, None], columns] = top_p + m0
    return flops


# ------------------------------------------------------------ calibration

def _exact_top(x: torch.Tensor, rows: torch.Tensor, k: int, chunk: int = 65_536) -> torch.Tensor:
    """Top-k ids of `rows` over all of `x`, in float32 (self excluded; -1 where fewer)."""
    q = x[rows]
    best_s = torch.full((len(rows), k), -math.inf, device=x.device)
    best_i = torch.full((len(rows), k), -1, dtype=torch.int64, device=x.device)
    for start in range(0, x.shape[0], chunk):
        s = q @ x[start : start + chunk].T
        own = rows - start
        inside = torch.nonzero((own >= 0) & (own < s.shape[1])).squeeze(1)
        s[inside, own[inside]] = -math.inf
        kk = min(k, s.shape[1])
        top_s, top_p = torch.topk(s, kk, dim=1)
        all_s = torch.cat([best_s, top_s], 1)
        all_i = torch.cat([best_i, top_p + start], 1)
        best_s, pos = torch.topk(all_s, k, dim=1)
        best_i = torch.gather(all_i, 1, pos)
    return torch.where(best_s > -math.inf, best_i, -1)


def _calibrate(x: torch.Tensor, centroids: torch.Tensor, rows: torch.Tensor, exact: torch.Tensor,
               target: float) -> int:
    """The smallest P whose recall on `rows` reaches `target`.

    No search is needed: a row's exact neighbour is among what the pass finds for it
    exactly when the neighbour's cell is among the row's P nearest; so the P each exact
    neighbour needs is 1 + the number of centroids nearer the row than its cell's, and
    recall(P) is the share of exact neighbours needing at most P."""
    valid = exact >= 0
    sims = x[rows] @ centroids.T  # [S, C]
    neighbour_cell = _probe_lists(x[exact.clamp(min=0).reshape(-1)], centroids, 1).view(exact.shape)
    theirs = sims.gather(1, neighbour_cell)  # [S, k]
    need = torch.stack([(sims > theirs[:, j : j + 1]).sum(1) + 1 for j in range(exact.shape[1])], 1)
    need = need[valid].cpu().numpy()
    per_row = valid.sum(1).cpu().numpy()
    row_of = np.repeat(np.arange(len(per_row)), per_row)

    def recall(p: int) -> float:
        hits = np.bincount(row_of, weights=need <= p, minlength=len(per_row))
        return float(np.mean(hits / np.maximum(per_row, 1)))

    for p in np.unique(need):
        if recall(int(p)) >= target:
            return int(p)
    return int(need.max()) if len(need) else 1
