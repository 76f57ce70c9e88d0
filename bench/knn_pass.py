"""The top-10-for-every-product pass: block matrix products over cells
(`graphsvc.index.knn.knn_graph`) against today's per-query IVF pass, both measured here.

    .venv/bin/python bench/knn_pass.py [--nodes 200000] [--dim 256] [--baseline-rows 20000] [--json]

For two kinds of vectors:

- clustered: a mixture around 47 category centres whose noise is as large as the spread
  of the centres, 10% of the points between two categories (like a trained model's
  embeddings: neighbours often come from other categories);
- unclustered: a seeded, untrained 2-layer GraphSAGE (100 → dim → dim, ReLU) over
  synthetic product features (47 categories, noisy) and a random graph of degree ~25
  with 80% same-category neighbours — the scale bench's untrained embeddings.

It prints this machine's matrix-multiply rates (torch, 4096², float32 = sgemm, and
bfloat16 for comparison), the multiply-adds the pass needed (how many rows each row was
compared with) and the floor time they imply at the sgemm rate, the pass's seconds and
recall@10 against exact search on 1,000 sampled rows (self excluded), and the
baseline: `VectorIndex.build` + `calibrate_nprobe` (as the jobs did) + the per-query
`neighbours_of_all` on `--baseline-rows` rows, extrapolated to all rows, with its recall
on the same 1,000 rows.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphsvc.index.knn import knn_graph, pick_device  # noqa: E402


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def sgemm_rate(device: torch.device, size: int = 4096, repeats: int = 5, dtype=torch.float32) -> float:
    """GFLOP/s of a size² matrix product (float32: sgemm), best of `repeats`."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    best = float("inf")
    for _ in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def clustered(n: int, dim: int, seed: int = 0, clusters: int = 47) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    labels = rng.integers(0, clusters, n)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        out[start:stop] = centres[labels[start:stop]] + rng.standard_normal((stop - start, dim), dtype=np.float32)
    # 10% of products sit between two categories (bench/service_latency.py draws them from
    # no category at all: pure noise, whose neighbours no index can find but by scanning)
    between = rng.choice(n, n // 10, replace=False)
    other = rng.integers(0, clusters, len(between))
    out[between] = 0.5 * (out[between] + centres[other]) + 0.5 * rng.standard_normal((len(between), dim),
                                                                                       dtype=np.float32)
    return out


def unclustered(n: int, dim: int, seed: int = 0, clusters: int = 47, features: int = 100, degree: int = 25,
                same_category: float = 0.8) -> np.ndarray:
    """An untrained GraphSAGE's embeddings of synthetic products (see the module docstring)."""
    rng = np.random.default_rng(seed)
    categories = rng.integers(0, clusters, n)
    centres = rng.standard_normal((clusters, features)).astype(np.float32)
    centres *= 3.0 / np.linalg.norm(centres, axis=1, keepdims=True)
    x = torch.from_numpy(centres[categories] + rng.normal(scale=2.2, size=(n, features)).astype(np.float32))
    by_category = np.argsort(categories, kind="stable")
    first = np.searchsorted(categories[by_category], np.arange(clusters + 1))
    torch.manual_seed(seed)
    layers = [(torch.nn.Linear(features, dim), torch.nn.Linear(features, dim, bias=False)),
              (torch.nn.Linear(dim, dim), torch.nn.Linear(dim, dim, bias=False))]
    neighbours = np.empty((n, degree), np.int64)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        own = categories[start:stop, None]
        pick = rng.random((stop - start, degree))
        same = by_category[first[own] + (pick * (first[own + 1] - first[own])).astype(np.int64)]
        neighbours[start:stop] = np.where(rng.random((stop - start, degree)) < same_category,
                                          same, rng.integers(0, n, (stop - start, degree)))
    neighbours_t = torch.from_numpy(neighbours)
    with torch.no_grad():
        for lin_l, lin_r in layers:
            out = torch.empty(n, dim)
            for start in range(0, n, 20_000):
                rows = slice(start, min(n, start + 20_000))
                mean = x[neighbours_t[rows]].mean(1)
                out[rows] = torch.relu(lin_l(mean) + lin_r(x[rows]))
            x = out
    return x.numpy()


def exact_top(unit: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    scores = torch.from_numpy(unit[rows]) @ torch.from_numpy(unit).T
    scores[torch.arange(len(rows)), torch.from_numpy(rows)] = -float("inf")
    return torch.topk(scores, k, dim=1).indices.numpy()


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / len(b) for a, b in zip(found, exact)]))


def baseline(vectors: np.ndarray, rows: np.ndarray, exact: np.ndarray, k: int, sample_rows: int) -> dict:
    """Today's pass: build + calibrate as the jobs do, then one IVF query per row."""
    from graphsvc.index.faiss_index import VectorIndex
    from graphsvc.index.similar import neighbours_of_rows

    started = time.perf_counter()
    index = VectorIndex.build(vectors, metric="cosine")
    built = time.perf_counter() - started
    calibration = index.calibrate_nprobe(k=k)
    calibrated = time.perf_counter() - started - built
    n = len(vectors)
    timed = np.sort(np.random.default_rng(1).choice(n, size=min(sample_rows, n), replace=False))
    started = time.perf_counter()
    neighbours_of_rows(index, timed, k)
    per_row = (time.perf_counter() - started) / len(timed)
    _, ids = neighbours_of_rows(index, rows, k)
    result = {"build_s": round(built, 2), "calibrate_s": round(calibrated, 2), "nprobe": calibration["nprobe"],
              "nlist": index.params["nlist"], "pass_s_extrapolated": round(per_row * n, 1),
              "total_s_extrapolated": round(built + calibrated + per_row * n, 1), "timed_rows": len(timed),
              "recall_at_10": round(recall(ids, exact), 4)}
    # the calibration stops at nlist/16 probes; where that misses 0.95, what reaching it would cost
    nprobe, found = index.nprobe, result["recall_at_10"]
    while found < 0.95 and nprobe < index.params["nlist"]:
        nprobe = index.nprobe = min(index.params["nlist"], nprobe * 2)
        found = recall(neighbours_of_rows(index, rows, k)[1], exact)
    if nprobe != result["nprobe"]:
        few = timed[: max(1, len(timed) // 10)]
        started = time.perf_counter()
        neighbours_of_rows(index, few, k)
        result["at_0_95"] = {"nprobe": nprobe, "recall_at_10": round(found, 4), "timed_rows": len(few),
                             "pass_s_extrapolated": round((time.perf_counter() - started) / len(few) * n, 1)}
    return result


def run_one(name: str, vectors: np.ndarray, args, rates: dict) -> dict:
    n = len(vectors)
    say(f"{name}: kNN pass over {n:,} × {vectors.shape[1]}")
    started = time.perf_counter()
    graph = knn_graph(vectors, args.k, device=args.device, cells=args.cells, probes=args.probes)
    rate = rates["float32"]
    seconds = time.perf_counter() - started
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-30)
    rows = np.sort(np.random.default_rng(12345).choice(n, size=min(1000, n), replace=False))
    exact = exact_top(unit, rows, args.k)
    result = {
        "seconds": round(seconds, 2), "phases": {p: round(s, 2) for p, s in graph.seconds.items()},
        "cells": graph.cells, "probes": graph.probes, "device": graph.device, "width": round(graph.width),
        "gflop": round(graph.flops / 1e9, 1), "floor_s": round(graph.flops / 1e9 / rate, 2),
        "exact_gflop": round(2.0 * n * n * vectors.shape[1] / 1e9, 1),
        "sampled_recall_at_10": round(graph.recall_at_k, 4),
        "recall_at_10": round(recall(graph.ids[rows], exact), 4),
    }
    del graph
    if args.baseline_rows:
        say(f"{name}: baseline (per-query IVF on {args.baseline_rows:,} rows, extrapolated)")
        result["baseline"] = baseline(vectors, rows, exact, args.k, args.baseline_rows)
        result["speedup"] = round(result["baseline"]["total_s_extrapolated"] / seconds, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--kinds", default="clustered,unclustered")
    parser.add_argument("--baseline-rows", type=int, default=20_000, help="0: no baseline")
    parser.add_argument("--cells", type=int, default=None)
    parser.add_argument("--probes", type=int, default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    device = pick_device(args.device)
    rates = {"float32": sgemm_rate(device), "bfloat16": sgemm_rate(device, dtype=torch.bfloat16)}
    report = {"nodes": args.nodes, "dim": args.dim, "device": str(device), "threads": torch.get_num_threads(),
              "sgemm_gflops": round(rates["float32"], 1), "bf16_gemm_gflops": round(rates["bfloat16"], 1),
              "kinds": {}}
    if not args.json:
        print(f"{args.nodes:,} × {args.dim}, k={args.k}, {report['device']} ({report['threads']} threads), "
              f"sgemm {rates['float32']:.0f} GFLOP/s, bf16 {rates['bfloat16']:.0f} GFLOP/s", flush=True)
    for name in args.kinds.split(","):
        make = {"clustered": clustered, "unclustered": unclustered}[name]
        say(f"{name}: generating {args.nodes:,} vectors")
        r = report["kinds"][name] = run_one(name, make(args.nodes, args.dim), args, rates)
        if args.json:
            continue
        print(f"{name}:")
        print(f"  kNN pass     {r['seconds']:7.1f} s  recall@10 {r['recall_at_10']:.4f} (its own sample "
              f"{r['sampled_recall_at_10']:.4f})  cells {r['cells']}  probes {r['probes']}  "
              f"compared with {r['width']:,} rows each  phases {r['phases']}")
        print(f"  arithmetic   {r['gflop']:,.0f} GFLOP → floor {r['floor_s']:.1f} s at the sgemm rate "
              f"({r['floor_s'] / r['phases']['pass']:.0%} of the pass phase); exact all-pairs "
              f"{r['exact_gflop']:,.0f} GFLOP")
        if "baseline" in r:
            b = r["baseline"]
            print(f"  today        {b['total_s_extrapolated']:7.1f} s  recall@10 {b['recall_at_10']:.4f}  (build "
                  f"{b['build_s']} s, calibrate {b['calibrate_s']} s → nlist {b['nlist']} nprobe {b['nprobe']}, "
                  f"per-query pass {b['pass_s_extrapolated']} s from {b['timed_rows']:,} rows)")
            if "at_0_95" in b:
                a = b["at_0_95"]
                print(f"  today ≥0.95  nprobe {a['nprobe']}: recall@10 {a['recall_at_10']:.4f}, per-query pass "
                      f"{a['pass_s_extrapolated']} s (from {a['timed_rows']:,} rows)")
            print(f"  speed-up     {r['speedup']}× (against today's calibrated pass)", flush=True)
    report["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"peak RSS {report['peak_rss_gb']} GB")


if __name__ == "__main__":
    main()
