"""`jobs embed-products` at scale: a generated graph of 200,000 products with average
degree 50, our job through Triton against in-process PyG layer-wise inference and the
workshop's way, all measured in this run.

    .venv/bin/python bench/embed_products_scale.py [--products 200000] [--degree 50] [--json]

- ours: `jobs.embed_products` as it is (layer-wise: neighbour means here, each layer's
  weights applied by Triton in batches of 16,384 nodes, 2 requests in flight); the
  embedding phase counts, best of two runs (the first warms up);
- in-process: PyG `SAGEConv` layer-wise over full neighbourhoods in batches of 4,096
  target nodes (the usual `inference()` of PyG's ogbn-products example), same weights;
- the workshop's way: one target node per HTTP request with its sampled [15,10,5]
  computation graph as JSON tensors, sequential, for `--workshop-seconds`.

The weights are a seeded, untrained GraphSAGE (100 → 256 → 256 → 47): throughput does
not depend on training.
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

from graphsvc.graph import CSRGraph, NeighbourSampler  # noqa: E402
from graphsvc.index.similar import embedding_array  # noqa: E402
from graphsvc.models import graphsage  # noqa: E402
from graphsvc.store import open_store  # noqa: E402
from graphsvc.triton.client import TritonClient  # noqa: E402
from graphsvc.triton.process import TritonServer  # noqa: E402
from jobs.embed_products import EmbedProductsConfig, embed_products  # noqa: E402
from jobs.export_models import export_graphsage  # noqa: E402
from jobs.synth import ProductGraphSpec, generate_product_graph, product_key  # noqa: E402
from tests.support import free_ports  # noqa: E402


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build(work: Path, products: int, degree: float):
    graph = generate_product_graph(ProductGraphSpec(num_products=products, mean_degree=degree, seed=1))
    keys = pa.array([product_key(i) for i in range(products)], pa.string())
    store = open_store(str(work / "store.duckdb"), create=True)
    store.create_collection("products")
    store.create_collection("bought_together", "edge")
    for start in range(0, products, 100_000):
        stop = min(products, start + 100_000)
        store.upsert_table("products", pa.table({
            "_key": keys.slice(start, stop - start),
            "category": pa.array(graph.categories[start:stop]),
            "features": embedding_array(graph.features[start:stop]),
        }))
    ends = keys.take(pa.array(graph.edges.reshape(-1)))
    sources = pa.compute.binary_join_element_wise("products/", ends.take(pa.array(np.arange(0, len(ends), 2))), "")
    targets = pa.compute.binary_join_element_wise("products/", ends.take(pa.array(np.arange(1, len(ends), 2))), "")
    for start in range(0, len(sources), 1_000_000):
        stop = min(len(sources), start + 1_000_000)
        store.upsert_table("bought_together", pa.table({
            "_key": pa.array([f"c{i}" for i in range(start, stop)], pa.string()),
            "_from": sources.slice(start, stop - start), "_to": targets.slice(start, stop - start),
        }))
    torch.manual_seed(0)
    model = graphsage.GraphSAGE(100, 256, 47).eval()
    checkpoint = work / "graphsage.pth.tar"
    graphsage.save_checkpoint(checkpoint, model, epoch=0, best_acc=0.0)
    return store, graph, model, checkpoint


def in_process_pyg(graph, model) -> float:
    """PyG's layer-wise inference: every layer over all nodes, targets in batches of 4,096."""
    from torch_geometric.nn import SAGEConv

    n = len(graph.categories)
    csr = CSRGraph.from_edges(graph.edges[:, 0], graph.edges[:, 1], n)
    convs = []
    for layer in model.convs:
        conv = SAGEConv(layer.in_channels, layer.out_channels, aggr="mean")
        conv.load_state_dict(layer.state_dict())
        convs.append(conv.eval())
    targets_of_edges = torch.from_numpy(np.repeat(np.arange(n), csr.degree()))
    sources_of_edges = torch.from_numpy(csr.indices)
    started = time.perf_counter()
    with torch.inference_mode():
        h = torch.from_numpy(graph.features)
        for i, conv in enumerate(convs):
            outputs = []
            for start in range(0, n, 4096):
                stop = min(n, start + 4096)
                lo, hi = int(csr.indptr[start]), int(csr.indptr[stop])
                edge_index = torch.stack([sources_of_edges[lo:hi], targets_of_edges[lo:hi] - start])
                outputs.append(conv((h, h[start:stop]), edge_index))
            h = torch.cat(outputs)
            if i < len(convs) - 1:
                h = h.relu()
    return n / (time.perf_counter() - started)


def workshop_way(server: TritonServer, graph, seconds: float) -> float:
    import tritonclient.http as httpclient
    from tritonclient.utils import np_to_triton_dtype

    n = len(graph.categories)
    csr = CSRGraph.from_edges(graph.edges[:, 0], graph.edges[:, 1], n)
    sampler = NeighbourSampler(csr, (15, 10, 5), seed=0)
    client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"), network_timeout=120)

    def one(node: int) -> None:
        tensors = graphsage.subgraph_request(graph.features, sampler.sample(np.array([node]), batch_number=node))
        inputs = []
        for name, array in tensors.items():
            item = httpclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            item.set_data_from_numpy(array, binary_data=False)
            inputs.append(item)
        outputs = [httpclient.InferRequestedOutput(o, binary_data=False)
                   for o in (graphsage.EMBEDDING, graphsage.LOGITS)]
        client.infer("graphsage", inputs, outputs=outputs).as_numpy(graphsage.EMBEDDING)

    one(0)  # warm-up, as our job gets one
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        one(done + 1)
        done += 1
    client.close()
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=200_000)
    parser.add_argument("--degree", type=float, default=50.0)
    parser.add_argument("--workshop-seconds", type=float, default=15.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="graphsvc-bench-") as tmp:
        work = Path(tmp)
        say(f"generating {args.products:,} products, mean degree {args.degree:g} …")
        store, graph, model, checkpoint = build(work, args.products, args.degree)
        export_graphsage(work / "repository", checkpoint)
        http, grpc, metrics = free_ports(3)
        with TritonServer(work / "repository", http_port=http, grpc_port=grpc, metrics_port=metrics,
                          runtime_dir=work / "runtime") as server:
            runs = []
            with TritonClient(server.grpc_url) as triton:
                for _ in range(2):
                    summary = embed_products(store, triton, work / "indexes", EmbedProductsConfig())
                    runs.append(summary)
                    say(f"ours: {summary['nodes_per_second']:,.0f} nodes/s (phases {summary['seconds']})")
            ours = max(runs, key=lambda r: r["nodes_per_second"])
            say("in-process PyG layer-wise …")
            pyg = max(in_process_pyg(graph, model) for _ in range(2))
            say("the workshop's way …")
            workshop = workshop_way(server, graph, args.workshop_seconds)
        store.close()

    report = {
        "products": args.products,
        "edges": int(len(graph.edges)),
        "ours_nodes_per_s": ours["nodes_per_second"],
        "ours_job_seconds": ours["seconds"],
        "in_process_pyg_nodes_per_s": round(pyg, 1),
        "workshop_nodes_per_s": round(workshop, 2),
        "ours_vs_in_process": round(ours["nodes_per_second"] / pyg, 2),
        "ours_vs_workshop": round(ours["nodes_per_second"] / workshop, 1),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"embed-products on {args.products:,} products, {report['edges']:,} co-purchases "
          f"(mean degree {args.degree:g})")
    print(f"  ours (Triton, layer-wise)    {report['ours_nodes_per_s']:>10,.0f} nodes/s   "
          f"whole job {ours['seconds']['total']}s")
    print(f"  in-process PyG layer-wise    {report['in_process_pyg_nodes_per_s']:>10,.0f} nodes/s")
    print(f"  workshop (1 node/request)    {report['workshop_nodes_per_s']:>10,.1f} nodes/s")
    print(f"  ours / in-process = {report['ours_vs_in_process']:.2f} (goal >= 0.5); "
          f"ours / workshop = {report['ours_vs_workshop']:,.0f}x (goal >= 350x)")


if __name__ == "__main__":
    main()
