"""Layer-wise GraphSAGE inference through Triton with and without system shared memory,
in the same run on the same server: a generated graph of 200,000 products (average
degree 50), the per-layer models of a seeded GraphSAGE (100 → 256 → 256 → 47).

    .venv/bin/python bench/triton_shared_memory.py [--products 200000] [--degree 50] [--rounds 2] [--json]

Both clients run `jobs.embed_products`' layer-wise loop (neighbour means here, each
layer's weights applied by Triton in batches of 16,384 nodes, 2 requests in flight);
they differ only in how the tensors travel: serialised into gRPC requests (the baseline)
or written into /dev/shm regions the server reads and writes (GRAPHSVC_TRITON_SHM). The
rounds alternate between the two; the best of each counts. The outputs must be equal.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphsvc.graph import CSRGraph  # noqa: E402
from graphsvc.graph.datasets import NodeGraph  # noqa: E402
from graphsvc.inference.layerwise import run_layers  # noqa: E402
from graphsvc.inference.runners import TritonLayers  # noqa: E402
from graphsvc.models import graphsage  # noqa: E402
from graphsvc.triton.client import TritonClient  # noqa: E402
from graphsvc.triton.process import TritonServer  # noqa: E402
from jobs.embed_products import EmbedProductsConfig  # noqa: E402
from jobs.export_models import export_graphsage  # noqa: E402
from jobs.synth import ProductGraphSpec, generate_product_graph  # noqa: E402
from tests.support import free_ports  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=200_000)
    parser.add_argument("--degree", type=float, default=50.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    generated = generate_product_graph(ProductGraphSpec(num_products=args.products, mean_degree=args.degree, seed=1))
    graph = CSRGraph.from_edges(generated.edges[:, 0], generated.edges[:, 1], args.products)
    data = NodeGraph(pa.array([str(i) for i in range(args.products)]), generated.features, None, graph, 0)
    with tempfile.TemporaryDirectory(prefix="graphsvc-bench-") as tmp:
        work = Path(tmp)
        torch.manual_seed(0)
        checkpoint = work / "graphsage.pth.tar"
        graphsage.save_checkpoint(checkpoint, graphsage.GraphSAGE(100, 256, 47).eval(), epoch=0, best_acc=0.0)
        export_graphsage(work / "repository", checkpoint)
        models = [graphsage.layer_model_name("graphsage", i) for i in range(3)]
        http, grpc, metrics = free_ports(3)
        seconds: dict[str, list[float]] = {"plain": [], "shared memory": []}
        outputs: dict[str, np.ndarray] = {}
        with TritonServer(work / "repository", http_port=http, grpc_port=grpc, metrics_port=metrics,
                          runtime_dir=work / "runtime") as server:
            for _ in range(args.rounds):
                for name, shared in (("plain", False), ("shared memory", True)):
                    with TritonClient(server.grpc_url, shared_memory=shared) as triton:
                        started = time.perf_counter()
                        config = EmbedProductsConfig()
                        embedding, _ = run_layers(TritonLayers(triton, models, config.max_in_flight), data.graph,
                                                  data.features, batch_size=config.layer_batch_size)
                        seconds[name].append(time.perf_counter() - started)
                        if shared and triton.shm_requests == 0:
                            raise SystemExit("the shared-memory client sent no request through shared memory")
                    outputs[name] = embedding
    same = bool(np.array_equal(outputs["plain"], outputs["shared memory"]))
    best = {name: min(values) for name, values in seconds.items()}
    report = {
        "products": args.products, "edges": int(graph.num_edges // 2), "rounds": args.rounds,
        "seconds": {name: [round(v, 2) for v in values] for name, values in seconds.items()},
        "nodes_per_second": {name: round(args.products / value) for name, value in best.items()},
        "speedup": round(best["plain"] / best["shared memory"], 2), "equal_outputs": same,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"layer-wise GraphSAGE through Triton, {args.products:,} products, {report['edges']:,} edges")
        for name in seconds:
            print(f"  {name:14s} {best[name]:6.2f} s  {report['nodes_per_second'][name]:>8,} nodes/s   "
                  f"(rounds: {', '.join(f'{v:.2f}' for v in seconds[name])})")
        print(f"  shared memory / plain: {report['speedup']:.2f}x   outputs equal: {same}")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
