"""The top-k of every row at once (a kNN graph), as block matrix products over cells.

Asking an index N separate questions is bound by memory traffic; the same comparisons
done as dense matrix products run at the machine's matrix-multiply rate. The recipe:

1. spherical k-means on a sample puts every (unit) row in one of C ≈ sqrt(N) cells;
2. each cell probes the P cells whose centroids are nearest its own, and the pairs are
   made symmetric: a cell's rows meet the members of the cells it probes *and* of the
   cells that probe it, so a row near a border also meets the cell across it (at 200k
   × 256, clustered: recall 0.971–0.973 for about the same products as probing one
   way with the same or twice the P; counted per pair of cells it would be ~1.7× fewer,
   but updating the other cell's lists from a product's columns cost more than it saved);
3. each cell's rows are multiplied with those members in blocks, one dense product
   each, and the top k of every row kept;
4. P is calibrated before the pass, without searching: a sampled row's exact neighbour
   is found exactly when its cell meets the row's, so recall(P) on 1,000 sampled rows
   follows from the ranks of the cells' centroids; the smallest P reaching the target
   recall is used, and the recall of the written lists is measured on the same rows.

Where bfloat16 products are fast (AVX-512 BF16 / AMX CPUs, CUDA) and the blocks are
wide, the products run in bfloat16, 2k candidates are kept per row and re-scored in
float32. HNSW and NN-descent were not measured: both compare one pair at a time by
gathered rows (memory-bound, like the per-query scans they would replace), while the
block products here run at the matrix-multiply rate.

Only torch and numpy are needed (a GPU host may have torch's CUDA build and nothing
else); the same code runs on the CPU or on CUDA, chosen by detection. Memory stays
bounded: one copy of the rows in cell order, blocks of at most `block_rows` ×
`block_cols` scores, and the [N, k] results.
"""

from __future__ import annotations

import math
import time
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
#: "auto" compares in bfloat16 from this many compared columns per row (see knn_graph)
BFLOAT16_MIN_WIDTH = 12_000


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
    precision: str  # what the products were computed in
    seconds: dict[str, float] = field(default_factory=dict)


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """`device` if given, else CUDA when torch sees it, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_cells(n: int) -> int:
    """About sqrt(N) cells of ≥ 64 rows. Measured at 200k × 256 (bench/knn_pass.py): sqrt(N)
    and 2·sqrt(N) cells need about the same products for the same recall, and sqrt(N)
    gives twice as large blocks (a better matrix-multiply rate) and half the k-means work."""
    return max(1, min(int(round(math.sqrt(max(n, 1)))), n // 64))


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Row-wise L2-normalised (zero rows stay zero)."""
    norms = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    return x / torch.where(norms > 0, norms, torch.ones_like(norms))


def fast_bfloat16(device: torch.device) -> bool:
    """Whether bfloat16 matrix products run faster than float32 here: CUDA with bf16
    support, or a CPU with AVX-512 BF16 / AMX (measured on this machine's Xeon: ~2.5×
    the float32 rate at the pass's block shapes)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((line for line in info if line.startswith("flags")), "")
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def knn_graph(vectors: np.ndarray | torch.Tensor, k: int, *, target_recall: float = TARGET_RECALL,
              cells: int | None = None, probes: int | None = None, sample: int = 1000, seed: int = 0,
              device: str | torch.device | None = None, precision: str = "auto", normalise: bool = True,
              block_rows: int = 1024, block_cols: int = 16_384) -> KnnGraph:
    """Top-k neighbours (inner product; cosine when `normalise`) of every row of
    `vectors` [N, d], the row itself excluded. `probes` fixes P; by default it is
    calibrated to `target_recall` on `sample` rows. `precision` "bfloat16" compares in
    bfloat16, keeps 2k candidates per row and re-scores them in float32 (the lists'
    scores are float32 inner products either way); "auto" takes it where it is faster
    (`fast_bfloat16`). Returns a `KnnGraph` whose `recall_at_k` is that of the lists
    written, on `sample` rows, against exact search."""
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if precision not in ("auto", "float32", "bfloat16"):
        raise ValueError(f"precision must be auto, float32 or bfloat16, got {precision!r}")
    dev = pick_device(device)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    x = torch.as_tensor(vectors)
    if x.ndim != 2:
        raise ValueError(f"vectors must be a 2-D array, got shape {tuple(x.shape)}")
    x = x.to(dev, torch.float32)
    if normalise:
        x = unit_rows(x)
    n = x.shape[0]
    k_eff = min(int(k), max(n - 1, 0))
    out_scores = np.full((n, k), -np.inf, np.float32)
    out_ids = np.full((n, k), -1, np.int64)
    if k_eff == 0:
        return KnnGraph(out_scores, out_ids, 1.0, 0, 0, 0, 0.0, str(dev), "float32", seconds)

    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    c = min(int(cells or default_cells(n)), n)
    centroids = _kmeans(x, c, gen, block_rows * 16)
    cell = _assign(x, centroids, block_rows * 16)
    seconds["cells"] = _clock(dev) - started

    mark = time.perf_counter()
    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(sample, n), replace=False))
    rows_t = torch.as_tensor(rows, device=dev)
    exact = _exact_top(x, rows_t, k_eff, block_cols)
    if probes is not None:
        probes = max(1, min(int(probes), c))
    probes, _ = _calibrate(cell, centroids, rows_t, exact, target_recall, probes)
    seconds["calibrate"] = _clock(dev) - mark

    mark = time.perf_counter()
    counts = torch.bincount(cell, minlength=c)
    nearest = torch.topk(centroids @ centroids.T, probes, dim=1).indices.cpu().numpy()  # [C, P], best first
    reach = _reach(_partners(nearest, probes))
    sizes = counts.cpu().numpy().astype(np.float64)
    width = float(sum(sizes[i] * sizes[r].sum() for i, r in enumerate(reach))) / n  # columns per row
    # bfloat16 pays where the products dominate: at 60k × 256 with ~25k columns per row it
    # ran 3× faster than float32; with ~5k (clustered, 100k) the top-2k and re-scoring
    # made it 1.3× slower
    low = precision == "bfloat16" or (precision == "auto" and width >= BFLOAT16_MIN_WIDTH and fast_bfloat16(dev))
    if low and precision == "auto":
        # bfloat16 resolves scores to ~0.4 %: where many neighbours lie closer together than
        # that (2.45M trained embeddings: recall 0.69 against 0.97 at 200k), its shortlist
        # misses them. Measured on the sample rows first, over all rows: float32 if it would.
        check = time.perf_counter()
        low = _shortlist_recall(x, rows_t, exact, min(2 * k_eff, n - 1), block_cols) >= target_recall
        seconds["precision_check"] = _clock(dev) - check
    # the rows in cell order (a cell's members are one slice), in the precision compared
    order = torch.argsort(cell, stable=True)
    starts = torch.zeros(c + 1, dtype=torch.int64, device=dev)
    starts[1:] = torch.cumsum(counts, 0)
    sorted_x = torch.empty(x.shape, dtype=torch.bfloat16 if low else torch.float32, device=dev)
    for start in range(0, n, 65_536):
        sorted_x[start : start + 65_536] = x[order[start : start + 65_536]]
    keep = min(2 * k_eff, n - 1) if low else k_eff
    best_s, best_i, flops = _row_pass(sorted_x, starts.cpu().numpy(), reach, keep, block_rows, block_cols)
    del sorted_x
    best_i = torch.where(best_i >= 0, order[best_i.clamp(min=0)], -1)  # positions → row ids
    rows_of = torch.empty_like(order)
    rows_of[order] = torch.arange(n, device=dev)
    best_s, best_i = best_s[rows_of], best_i[rows_of]
    if low:
        best_s, best_i = _rescore(x, best_i, k_eff)
    seconds["pass"] = _clock(dev) - mark

    out_scores[:, :k_eff] = best_s.cpu().numpy()
    out_ids[:, :k_eff] = best_i.cpu().numpy()
    out_scores[out_ids < 0] = -np.inf
    # the recall of the lists written, not the calibration's prediction of it
    recall = recall_at_k(out_ids[rows, :k_eff], exact.cpu().numpy())
    seconds["total"] = time.perf_counter() - started
    return KnnGraph(out_scores, out_ids, recall, len(rows), c, probes, flops, str(dev),
                    "bfloat16" if low else "float32", seconds)


def _rescore(x: torch.Tensor, ids: torch.Tensor, k: int, chunk: int = 16_384) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's candidates scored in float32, the best k kept, best first."""
    out_s = torch.empty(len(ids), k, device=x.device)
    out_i = torch.empty(len(ids), k, dtype=torch.int64, device=x.device)
    for start in range(0, len(ids), chunk):
        cand = ids[start : start + chunk]
        scores = torch.einsum("rd,rkd->rk", x[start : start + chunk], x[cand.clamp(min=0)])
        scores[cand < 0] = -math.inf
        top_s, pos = torch.topk(scores, k, dim=1)
        out_s[start : start + chunk], out_i[start : start + chunk] = top_s, torch.gather(cand, 1, pos)
    return out_s, out_i


def _clock(device: torch.device) -> float:
    """perf_counter once the device's queued work is done (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each row's exact top k (ids [r, k], -1 = none) found in `found`."""
    hits = (found[:, :, None] == exact[:, None, :]) & (exact[:, None, :] >= 0)
    wanted = np.maximum((exact >= 0).sum(1), 1)
    return float(np.mean(hits.any(1).sum(1) / wanted)) if len(exact) else 1.0


# ------------------------------------------------------------------ cells

def _assign(x: torch.Tensor, centroids: torch.Tensor, chunk: int) -> torch.Tensor:
    out = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    for start in range(0, x.shape[0], chunk):
        out[start : start + chunk] = torch.argmax(x[start : start + chunk] @ centroids.T, dim=1)
    return out


def _kmeans(x: torch.Tensor, cells: int, gen: torch.Generator, chunk: int) -> torch.Tensor:
    """Spherical k-means (unit centroids, nearest by inner product) on a sample.
    Hand-written because torch has none and faiss may be absent; ~a dozen iterations
    of one matrix product each."""
    n = x.shape[0]
    train = x[torch.randperm(n, generator=gen)[: min(n, cells * TRAIN_ROWS_PER_CELL)].to(x.device)]
    centroids = train[torch.randperm(train.shape[0], generator=gen)[:cells].to(x.device)].clone()
    for _ in range(KMEANS_ITERATIONS):
        assign = _assign(train, centroids, chunk)
        sums = torch.zeros_like(centroids).index_add_(0, assign, train)
        empty = torch.bincount(assign, minlength=cells) == 0
        if empty.any():  # an empty cell restarts at a random training row
            pick = torch.randint(0, train.shape[0], (int(empty.sum()),), generator=gen).to(x.device)
            sums[empty] = train[pick]
        centroids = unit_rows(sums)
    return centroids


def _partners(nearest: np.ndarray, probes: int) -> list[np.ndarray]:
    """For each cell c, the cells c' ≥ c it is compared with: c itself, then the pairs
    {c, c'} where either probes the other among its `probes` nearest."""
    c = nearest.shape[0]
    a = np.repeat(np.arange(c), probes)
    b = nearest[:, :probes].reshape(-1)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    pairs = np.unique(lo * c + hi)
    return _by_first_cell(pairs, c)


def _reach(partners: list[np.ndarray]) -> list[np.ndarray]:
    """Both directions of the pairs: for each cell, every cell its members meet (itself first)."""
    c = len(partners)
    lo = np.concatenate([np.full(len(p), i) for i, p in enumerate(partners)])
    hi = np.concatenate(partners)
    keys = np.unique(np.concatenate([lo * c + hi, hi * c + lo]))
    return _by_first_cell(keys, c)


def _by_first_cell(pairs: np.ndarray, c: int) -> list[np.ndarray]:
    """Sorted unique pair codes `first * c + second` → per cell, itself then its seconds."""
    first, second = pairs // c, pairs % c
    split = np.searchsorted(first, np.arange(c + 1))
    out = []
    for cell in range(c):
        others = second[split[cell] : split[cell + 1]]
        out.append(np.concatenate([[cell], others[others != cell]]))
    return out


def _row_pass(x: torch.Tensor, starts: np.ndarray, reach: list[np.ndarray], k: int, block_rows: int,
              block_cols: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Each cell's rows against every member of the cells it meets, row side only: each
    pair of cells is multiplied twice, but nothing is gathered or scattered per block,
    which on the CPU cost more than the products saved (measured at 100k × 256).

    On the CPU the cells are shared among one Python thread per core, each running
    torch single-threaded (cells write disjoint rows): the blocks are small, and torch's
    own threads wait for each other at every one of the ~10 operations a block takes —
    at 100k × 256 on this project's shared 2-core machine, 19 s with 2 torch threads
    against 4.7 s with one."""
    n, d = x.shape
    dev = x.device
    best_s = torch.full((n, k), -math.inf, device=dev)
    best_i = torch.full((n, k), -1, dtype=torch.int64, device=dev)
    workers = 1 if dev.type != "cpu" else max(1, torch.get_num_threads())

    def run(first: int) -> float:
        product = torch.empty(block_rows * block_cols, dtype=x.dtype, device=dev)
        gathered = torch.empty(block_cols, d, dtype=x.dtype, device=dev)
        flops = 0.0
        for c in range(first, len(reach), workers):
            flops += _cell_rows(x, starts, reach[c], c, k, best_s, best_i, product, gathered, block_rows, block_cols)
        return flops

    if workers == 1:
        return best_s, best_i, run(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(workers) as pool:
            flops = sum(pool.map(run, range(workers)))
    finally:
        torch.set_num_threads(threads)
    return best_s, best_i, flops


def _cell_rows(x, starts, cells, c, k, best_s, best_i, product, gathered, block_rows, block_cols) -> float:
    """One cell's rows against the members of `cells` (its own first), into best_s/best_i."""
    r0, r1 = int(starts[c]), int(starts[c + 1])
    if r1 == r0:
        return 0.0
    dev = x.device
    cols = _members(starts, cells, dev)
    flops = 0.0
    for c0 in range(0, len(cols), block_cols):
        col_ids = cols[c0 : c0 + block_cols]
        m = len(col_ids)
        xc = torch.index_select(x, 0, col_ids, out=gathered[:m])
        for b0 in range(r0, r1, block_rows):
            b1 = min(r1, b0 + block_rows)
            r = b1 - b0
            s = torch.mm(x[b0:b1], xc.T, out=product[: r * m].view(r, m))
            flops += 2.0 * r * m * x.shape[1]
            if c0 < r1 - r0:  # the own cell: no row meets itself
                diag = torch.arange(b0, b1, device=dev)
                local = diag - r0 - c0
                inside = (local >= 0) & (local < m)
                s[(diag - b0)[inside], local[inside]] = -math.inf
            top_s, top_p = _top(s, k)
            top_i = torch.where(top_p >= 0, col_ids[top_p.clamp(min=0)], -1)
            if c0 == 0:
                best_s[b0:b1], best_i[b0:b1] = top_s, top_i
            else:
                best_s[b0:b1], best_i[b0:b1] = _merge(best_s[b0:b1], best_i[b0:b1], top_s, top_i)
    return flops


def _members(starts: np.ndarray, cells: np.ndarray, device: torch.device) -> torch.Tensor:
    if len(cells) == 0:
        return torch.zeros(0, dtype=torch.int64, device=device)
    parts = [np.arange(starts[c], starts[c + 1]) for c in cells]
    return torch.as_tensor(np.concatenate(parts), device=device)


# ------------------------------------------------------------------- pass

def _merge(best_s: torch.Tensor, best_i: torch.Tensor, s: torch.Tensor, i: torch.Tensor
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Two best-first lists per row → the best `best_s.shape[1]` of both."""
    all_s, all_i = torch.cat([best_s, s], 1), torch.cat([best_i, i], 1)
    top_s, pos = torch.topk(all_s, best_s.shape[1], dim=1)
    return top_s, torch.gather(all_i, 1, pos)


def _top(s: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise top k of `s`, padded with -inf / -1 where it has fewer columns."""
    kk = min(k, s.shape[1])
    top_s, top_p = torch.topk(s, kk, dim=1)
    top_s = top_s.float()
    if kk < k:
        pad = s.shape[0], k - kk
        top_s = torch.cat([top_s, torch.full(pad, -math.inf, device=s.device)], 1)
        top_p = torch.cat([top_p, torch.full(pad, -1, dtype=torch.int64, device=s.device)], 1)
    return top_s, top_p


# ------------------------------------------------------------ calibration

def _shortlist_recall(x: torch.Tensor, rows: torch.Tensor, exact: torch.Tensor, keep: int, chunk: int) -> float:
    """Recall@k of `rows` when they are compared with every row in bfloat16 and their best
    `keep` re-scored in float32: what the low-precision pass loses, whichever cells meet."""
    shortlist = _exact_top(x, rows, keep, chunk, torch.bfloat16)
    scores = torch.einsum("rd,rkd->rk", x[rows], x[shortlist.clamp(min=0)])
    scores[shortlist < 0] = -math.inf
    found = torch.gather(shortlist, 1, torch.topk(scores, exact.shape[1], dim=1).indices)
    return recall_at_k(found.cpu().numpy(), exact.cpu().numpy())


def _exact_top(x: torch.Tensor, rows: torch.Tensor, k: int, chunk: int,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Top-k ids of `rows` over all of `x` (self excluded; -1 where fewer), compared in
    `dtype`: exact in float32."""
    q = x[rows].to(dtype)
    best_s = torch.full((len(rows), k), -math.inf, device=x.device)
    best_i = torch.full((len(rows), k), -1, dtype=torch.int64, device=x.device)
    for start in range(0, x.shape[0], chunk * 4):
        s = (q @ x[start : start + chunk * 4].to(dtype).T).float()
        own = rows - start
        inside = (own >= 0) & (own < s.shape[1])
        s[torch.nonzero(inside).squeeze(1), own[inside]] = -math.inf
        top_s, top_p = _top(s, k)
        best_s, best_i = _merge(best_s, best_i, top_s, torch.where(top_p >= 0, top_p + start, -1))
    return best_i


def _calibrate(cell: torch.Tensor, centroids: torch.Tensor, rows: torch.Tensor, exact: torch.Tensor,
               target: float, probes: int | None) -> tuple[int, float]:
    """The smallest P whose recall on `rows` reaches `target` (or the recall of the given P).

    No search is needed: a row's exact neighbour is among what the pass finds for it
    exactly when the pass compares their cells, i.e. when one cell is among the other's
    P nearest. So the P each exact neighbour needs is 1 + the lower of the two ranks,
    and recall(P) is the share of exact neighbours needing at most P."""
    valid = exact >= 0
    a = cell[rows][:, None].expand_as(exact)[valid]
    b = cell[exact[valid]]
    sims = centroids @ centroids.T if centroids.shape[0] <= 8192 else None

    def rank(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
        # how many centroids are nearer to src than dst is (src itself comes first)
        out = torch.empty(len(src), dtype=torch.int64, device=src.device)
        for start in range(0, len(src), 4096):
            s, t = src[start : start + 4096], dst[start : start + 4096]
            row = sims[s] if sims is not None else centroids[s] @ centroids.T
            mine = row.gather(1, t[:, None])
            ahead = (row > mine).sum(1)
            out[start : start + 4096] = torch.where(s == t, 0, torch.clamp(ahead, min=1))
        return out

    need = (torch.minimum(rank(a, b), rank(b, a)) + 1).cpu().numpy()
    per_row = valid.sum(1).clamp(min=1).cpu().numpy()
    row_of = np.repeat(np.arange(len(per_row)), valid.sum(1).cpu().numpy())

    def recall(p: int) -> float:
        hits = np.bincount(row_of, weights=need <= p, minlength=len(per_row))
        return float(np.mean(hits / per_row))

    if probes is not None:
        return probes, recall(probes)
    ordered = np.sort(need)
    for p in np.unique(ordered):
        if recall(int(p)) >= target:
            return int(p), recall(int(p))
    return int(ordered[-1]) if len(ordered) else 1, 1.0
