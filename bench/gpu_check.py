"""The GPU path at the workshop's size, one command: training nodes/s and the
top-10-for-every-product pass on whatever accelerator torch sees.

    python3 bench/gpu_check.py                        # 2,449,029 products, 61,859,140 co-purchases
    python3 bench/gpu_check.py --nodes 100000 --edges 2500000 --device cpu   # the same on the CPU, small

Needs only torch, numpy, pyarrow and this project (a GPU host may have torch's CUDA build
and nothing else: no faiss-gpu, no DuckDB, no Triton), so everything runs in this process:

1. the machine: torch, the device, its float32 matrix-multiply rate (TF32 off and on);
2. the catalogue in memory, from the same seeded generator as `jobs synth products`;
3. training: the `jobs train-graphsage` step (fanouts 15,10,5, batch 1024) on the device,
   and on the CPU for a few steps as the in-run baseline: nodes/s, the sampler's share, the
   step's dense arithmetic against the measured matrix-multiply rate;
4. layer-wise inference of every product on the device (an untrained GraphSAGE, 100 → 256
   → 256 → 47): its embeddings are the worst case for the kNN pass (they hardly cluster);
5. the kNN pass (`graphsvc.index.knn.knn_graph`) on those embeddings and on clustered
   vectors like a trained model's, with recall@10 against exact search on 1,000 rows.

`--out DIR` also writes the figures as DIR/gpu_check.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from knn_pass import clustered  # noqa: E402

from graphsvc.graph import CSRGraph  # noqa: E402
from graphsvc.index.knn import knn_graph, pick_device  # noqa: E402
from graphsvc.inference.layerwise import embed_layerwise  # noqa: E402
from graphsvc.models.graphsage import GraphSAGE  # noqa: E402
from jobs.catalogue import OGBN_PRODUCTS_EDGES, OGBN_PRODUCTS_NODES, Catalogue, CatalogueSpec  # noqa: E402
from jobs.train import train_throughput  # noqa: E402


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_rate(device: torch.device, tf32: bool, size: int = 8192, repeats: int = 5) -> float:
    """GFLOP/s of a size² float32 matrix product, best of `repeats` after a warm-up."""
    if device.type == "cpu":
        size = 4096
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        a = torch.randn(size, size, device=device)
        b = torch.randn(size, size, device=device)
        best = float("inf")
        for _ in range(repeats + 1):
            sync(device)
            started = time.perf_counter()
            a @ b
            sync(device)
            best = min(best, time.perf_counter() - started)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    return round(2 * size**3 / best / 1e9, 1)


def catalogue_in_memory(nodes: int, edges: int, seed: int = 0):
    """(graph, features, labels, train nodes) of the catalogue `jobs synth products` writes."""
    catalogue = Catalogue(CatalogueSpec(nodes, edges, seed=seed))
    spec = catalogue.spec if hasattr(catalogue, "spec") else CatalogueSpec(nodes, edges, seed=seed)
    features = np.empty((nodes, spec.feature_dim), np.float32)
    labels = np.empty(nodes, np.int64)
    splits = np.empty(nodes, np.int8)
    sources, targets = [], []
    for chunk in range(spec.num_chunks):
        products = catalogue.products(chunk)
        rows = slice(products.first, products.first + len(products.categories))
        features[rows] = products.features
        labels[rows] = products.categories
        splits[rows] = products.splits
        part = catalogue.edges(chunk)
        sources.append(part.sources.astype(np.int32))
        targets.append(part.targets.astype(np.int32))
    source, target = np.concatenate(sources), np.concatenate(targets)
    del sources, targets
    graph = CSRGraph.from_edges(source, target, nodes)
    return graph, features, labels, np.flatnonzero(splits == 0), int(len(source))


def knn_figures(name: str, vectors: np.ndarray, device: torch.device) -> dict:
    sync(device)
    started = time.perf_counter()
    result = knn_graph(vectors, 10, device=device)
    sync(device)
    seconds = time.perf_counter() - started
    figures = {"vectors": name, "rows": int(len(vectors)), "seconds": round(seconds, 2),
               "recall_at_10": round(float(result.recall_at_k), 4), "cells": result.cells, "probes": result.probes,
               "gflop": round(result.flops / 1e9, 1), "phases": {k: round(v, 2) for k, v in result.seconds.items()}}
    say(f"   kNN pass, {name}: {seconds:.1f} s, recall@10 {figures['recall_at_10']} "
        f"({result.cells} cells, {result.probes} probed)")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=OGBN_PRODUCTS_NODES)
    parser.add_argument("--edges", type=int, default=OGBN_PRODUCTS_EDGES)
    parser.add_argument("--device", default=None, help="cuda, cpu, … [default: CUDA when torch sees it]")
    parser.add_argument("--train-steps", type=int, default=40)
    parser.add_argument("--cpu-train-steps", type=int, default=5, help="The CPU baseline's steps (0: skip it).")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    device = pick_device(args.device)

    def save() -> None:  # after every section: a run cut short still leaves what it measured
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1))

    report: dict = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device)}
    if device.type == "cuda":
        report["gpu"] = torch.cuda.get_device_name(device)
    try:
        import faiss  # noqa: F401  (optional: the kNN pass falls back to torch without it)

        report["faiss_gpus"] = faiss.get_num_gpus()
    except ImportError:
        report["faiss_gpus"] = None
    report["matmul_gflops"] = {"fp32": matmul_rate(device, tf32=False), "tf32": matmul_rate(device, tf32=True)}
    save()
    say(f"== {report.get('gpu', device)}: matmul {report['matmul_gflops']} GFLOP/s")

    started = time.perf_counter()
    graph, features, labels, train_nodes, edges = catalogue_in_memory(args.nodes, args.edges)
    report["catalogue"] = {"products": args.nodes, "edges": edges, "train_nodes": int(len(train_nodes)),
                           "seconds": round(time.perf_counter() - started, 1)}
    save()
    say(f"== catalogue: {args.nodes:,} products, {edges:,} co-purchases in {report['catalogue']['seconds']} s")

    report["training"] = train_throughput(graph, features, labels, train_nodes, steps=args.train_steps,
                                          device=str(device))
    save()
    say(f"== training on {device}: {report['training']}")
    if args.cpu_train_steps and device.type != "cpu":
        report["training_cpu"] = train_throughput(graph, features, labels, train_nodes, steps=args.cpu_train_steps,
                                                  device="cpu")
        save()
        say(f"== training on the CPU (baseline): {report['training_cpu']}")

    torch.manual_seed(0)
    model = GraphSAGE(features.shape[1], 256, int(labels.max()) + 1).eval()
    sync(device)
    started = time.perf_counter()
    embeddings, _ = embed_layerwise(model, graph, features, device=str(device))
    sync(device)
    seconds = time.perf_counter() - started
    report["layerwise_inference"] = {"seconds": round(seconds, 2), "nodes_per_s": round(args.nodes / seconds)}
    save()
    say(f"== layer-wise inference on {device}: {seconds:.1f} s ({args.nodes / seconds:,.0f} nodes/s)")

    report["knn"] = [knn_figures("untrained GraphSAGE embeddings (unclustered)", embeddings, device)]
    save()
    del embeddings
    report["knn"].append(knn_figures("clustered (trained-like)", clustered(args.nodes, 256), device))
    report["peak_rss_gb"] = round(peak_rss_gb(), 1)
    if device.type == "cuda":
        report["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 1024**3, 1)

    save()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
