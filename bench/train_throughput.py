"""Training throughput of `jobs train-graphsage` (fanouts 15,10,5, batch 1024) against
this machine's matrix-multiply rate, with PyG's own route measured in the same run as the
baseline: SAGEConv's message passing on the edge list (`GraphSAGE.forward`, the exported
model) and torch's dropout, where the job takes the fused sparse route (`forward_blocks`).
Timings here are noisy: the CPU is shared.

    python bench/train_throughput.py                       # 100k nodes, mean degree ~50
    python bench/train_throughput.py --nodes 2450000 --steps 6 --baseline-steps 2
    python bench/train_throughput.py --csr-edges 61859140  # peak RSS of building the CSR only

Prints: sgemm GFLOP/s; per-step split (sample / gather / forward / backward / optimiser)
for the baseline (the edge-list forward) and the job's step; training nodes/s; the
ceiling the step's dense arithmetic implies at the sgemm rate; and an epoch of 196,615
training nodes (ogbn-products' train split) extrapolated from the measured rate.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from graphsvc.graph import CSRGraph, NeighbourSampler  # noqa: E402
from graphsvc.models.graphsage import GraphSAGE  # noqa: E402
from jobs.train import step_flops, train_throughput  # noqa: E402

OGBN_TRAIN_NODES = 196_615


def sgemm_gflops(size: int = 4096, repeats: int = 3) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def power_law_edges(num_nodes: int, mean_degree: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Chung–Lu edges: endpoints drawn in proportion to a Pareto weight (exponent 2.5),
    so degrees have a co-purchase graph's long tail; capped near ogbn-products' largest
    degree (17,481). Drawn in blocks to bound memory."""
    rng = np.random.default_rng(seed)
    weight = np.minimum((1.0 - rng.random(num_nodes)) ** (-1 / 1.5), 1000.0)
    cumulative = np.cumsum(weight)
    cumulative /= cumulative[-1]
    count = int(num_nodes * mean_degree / 2)
    ends = np.empty((2, count), np.int32)
    for start in range(0, count, 1 << 22):
        size = min(1 << 22, count - start)
        ends[:, start : start + size] = np.searchsorted(cumulative, rng.random((2, size)))
    return ends[0], ends[1]


def labelled_features(num_nodes: int, classes: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed + 1)
    labels = rng.integers(0, classes, num_nodes)
    centres = rng.standard_normal((classes, dim), dtype=np.float32)
    features = rng.standard_normal((num_nodes, dim), dtype=np.float32)
    features += centres[labels]
    return features, labels


def baseline_throughput(graph, features, labels, train_nodes, fanouts, batch_size, steps, seed=0) -> dict:
    """The training step on PyG's route: the job's sampler, then GraphSAGE.forward on the
    edge list (SAGEConv's message passing per layer) and torch's dropout, sampled in turn."""
    torch.manual_seed(seed)
    model = GraphSAGE(features.shape[1], 256, int(labels.max()) + 1, len(fanouts))
    optimiser = torch.optim.Adam(model.parameters(), lr=0.005)
    sampler = NeighbourSampler(graph, fanouts, seed=seed)
    x, y = torch.from_numpy(features), torch.from_numpy(labels)
    order = np.random.default_rng(seed).permutation(train_nodes)
    phases = dict.fromkeys(["sample", "gather", "forward", "backward", "optimiser"], 0.0)
    layers = np.zeros((len(fanouts), 3))
    for number in range(steps + 1):
        batch = order[number * batch_size : (number + 1) * batch_size]
        clock = [time.perf_counter()]

        # mark() is only called within this iteration, so it sees this step's `number` and `clock`
        def mark(phase):
            now = time.perf_counter()
            if number:  # noqa: B023 - the first step warms up
                phases[phase] += now - clock[0]  # noqa: B023
            clock[0] = now  # noqa: B023

        sub = sampler.sample(batch, batch_number=number)
        mark("sample")
        inputs, edge_index, sizes = x[sub.nodes], torch.from_numpy(sub.edge_index), torch.from_numpy(sub.sizes)
        mark("gather")
        optimiser.zero_grad()
        _, logits = model(inputs, edge_index, sizes)
        loss = torch.nn.functional.cross_entropy(logits, y[batch])
        mark("forward")
        loss.backward()
        mark("backward")
        optimiser.step()
        loss.item()
        mark("optimiser")
        if number:
            for layer in range(len(fanouts)):
                rows = sub.sizes[layer]
                inputs_ = sub.sizes[layer - 1] if layer else len(sub.nodes)
                layers[layer] += [rows, inputs_, int((sub.edge_index[1] < rows).sum())]
    wall = sum(phases.values())
    return {
        "nodes_per_s": round(steps * batch_size / wall, 1),
        "step_s": round(wall / steps, 4),
        "sample_share": round(phases["sample"] / wall, 3),
        **{f"{k}_s": round(v / steps, 4) for k, v in phases.items()},
        "layers": (layers / steps).round().astype(int).tolist(),
    }


def csr_peak_rss(edges: int, nodes: int) -> None:
    """Build the CSR of `edges` random edges (one direction; made undirected) and print
    the process's peak RSS (this process does nothing else before)."""
    rng = np.random.default_rng(0)
    source = rng.integers(0, nodes, edges, dtype=np.int32)
    target = rng.integers(0, nodes, edges, dtype=np.int32)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    graph = CSRGraph.from_edges(source, target, nodes)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"edges": edges, "nodes": nodes, "entries": graph.num_edges,
                      "seconds": round(seconds, 1), "inputs_gb": round((source.nbytes + target.nbytes) / 1e9, 2),
                      "csr_gb": round((graph.indptr.nbytes + graph.indices.nbytes) / 1e9, 2),
                      "peak_rss_gb": round(peak / 1e6, 2), "rss_before_gb": round(before / 1e6, 2),
                      "dtype": str(graph.indices.dtype)}))


def _row(name: str, figures: dict) -> str:
    return (f"{name:<9} {figures['nodes_per_s']:>8.0f} nodes/s  step {figures['step_s']:.3f}s = sample "
            f"{figures['sample_s']:.3f} + gather {figures['gather_s']:.3f} + forward {figures['forward_s']:.3f} "
            f"+ backward {figures['backward_s']:.3f} + optimiser {figures['optimiser_s']:.3f}"
            + (f"  (sampler waited on: {figures['wait_s']:.3f}s)" if "wait_s" in figures else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--degree", type=float, default=50.0, help="Mean degree (both directions).")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--fanouts", default="15,10,5")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--baseline-steps", type=int, default=3, help="0: skip the baseline.")
    parser.add_argument("--rounds", type=int, default=2, help="Baseline and current alternate this often.")
    parser.add_argument("--device", default=None, help="cpu or cuda [default: cuda when there is one].")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sampler-threads", type=int, default=None,
                        help="Batches sampled ahead at once [default: 1 on the CPU, up to 8 beside a GPU].")
    parser.add_argument("--graph-cache", type=Path, default=None,
                        help="Directory to keep the generated CSR in between runs (npy files, ~0.5 GB at 2.45M nodes).")
    parser.add_argument("--csr-edges", type=int, default=None,
                        help="Only measure building the CSR of this many random edges (peak RSS per variant).")
    args = parser.parse_args()
    if args.csr_edges:
        csr_peak_rss(args.csr_edges, args.nodes)
        return

    fanouts = tuple(int(f) for f in args.fanouts.split(","))
    gflops = sgemm_gflops()
    print(f"sgemm (4096² float32, {torch.get_num_threads()} threads): {gflops:.0f} GFLOP/s")
    started = time.perf_counter()
    cached = args.graph_cache / f"graph-{args.nodes}-{args.degree:g}-{args.seed}" if args.graph_cache else None
    if cached and (cached / "indices.npy").exists():
        graph = CSRGraph(np.load(cached / "indptr.npy"), np.load(cached / "indices.npy"))
    else:
        graph = CSRGraph.from_edges(*power_law_edges(args.nodes, args.degree, args.seed), args.nodes)
        if cached:
            cached.mkdir(parents=True, exist_ok=True)
            np.save(cached / "indptr.npy", graph.indptr)
            np.save(cached / "indices.npy", graph.indices)
    features, labels = labelled_features(args.nodes, 47, 100, args.seed)
    train_nodes = np.random.default_rng(args.seed).permutation(args.nodes)[: max(args.nodes // 12, args.batch_size)]
    print(f"graph: {graph.num_nodes:,} nodes, {graph.num_edges // 2:,} edges, mean degree "
          f"{graph.num_edges / graph.num_nodes:.1f}, max {graph.degree().max():,} "
          f"({time.perf_counter() - started:.1f}s)")
    baselines, currents = [], []
    for _ in range(args.rounds):
        if args.baseline_steps:
            baselines.append(baseline_throughput(graph, features, labels, train_nodes, fanouts,
                                                 args.batch_size, args.baseline_steps, args.seed))
            print(_row("baseline", baselines[-1]), flush=True)
        currents.append(train_throughput(graph, features, labels, train_nodes, fanouts, args.batch_size,
                                         args.steps, device=args.device, seed=args.seed,
                                         threads=args.sampler_threads))
        print(_row("current", currents[-1]), flush=True)

    best = max(currents, key=lambda r: r["nodes_per_s"])
    dims = [100, 256, 256, 47][: len(fanouts) + 1]
    layers = [[layer["rows"], layer["inputs"], layer["edges"]] for layer in best["layers"]]
    flops = step_flops(layers, dims)
    ceiling = args.batch_size / (flops["train"] / (gflops * 1e9))
    print(f"device: {best['device']}; sampled per step (rows computed / input rows / edges per layer): "
          + ", ".join(f"{r:,}/{i:,}/{e:,}" for r, i, e in layers))
    print(f"dense arithmetic per step: {flops['train'] / 1e9:.1f} GFLOP (forward {flops['forward'] / 1e9:.1f}; "
          f"x3 rule {flops['x3'] / 1e9:.1f}); at {gflops:.0f} GFLOP/s the arithmetic alone would allow "
          f"{ceiling:,.0f} nodes/s; we reach {best['nodes_per_s']:,.0f} ({best['nodes_per_s'] / ceiling:.0%})")
    print(f"sampler: {best['sample_s']:.3f}s per batch ({best['sampler_threads']} thread(s)) beside a "
          f"{best['step_s']:.3f}s step ({best['sample_share']:.0%}); the step waited {best['wait_s']:.3f}s "
          f"for it (the rest overlapped)")
    if baselines:
        base = max(baselines, key=lambda r: r["nodes_per_s"])
        print(f"speed-up over the baseline in this run: {best['nodes_per_s'] / base['nodes_per_s']:.2f}x "
              f"({base['nodes_per_s']:.0f} -> {best['nodes_per_s']:.0f} nodes/s; best of {args.rounds} rounds each)")
    print(f"epoch of {OGBN_TRAIN_NODES:,} training nodes at this rate: {OGBN_TRAIN_NODES / best['nodes_per_s']:.0f}s "
          f"(goal 210s; measured on a {args.nodes:,}-node graph: a larger graph overlaps less, so more rows per step)")
    print(json.dumps({"sgemm_gflops": round(gflops, 1), "current": currents, "baseline": baselines}))


if __name__ == "__main__":
    main()
