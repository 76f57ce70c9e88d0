"""`jobs embed-products` on one machine against the same job on Ray, in one run: the
generated 200,000-product graph of `embed_products_scale.py` (mean degree 50, a seeded
untrained GraphSAGE 100 → 256 → 256 → 47 on Triton).

    .venv/bin/python bench/ray_scale.py [--products 200000] [--degree 50] [--workers 2] [--partitions 4] [--json]
    .venv/bin/python bench/ray_scale.py --pull-only [--products 200000] [--rounds 3]
    .venv/bin/python bench/ray_scale.py --texts-only [--movies 200000] [--rounds 3]

- local: `EmbedProductsConfig()` as it is;
- Ray: `EmbedProductsConfig(executor="ray", ray_address=None, partitions=N, ray_actors=W)`:
  a Ray started on this machine by the job, W actors calling the same Triton server;
- each runs twice, alternating (the first of each warms up), the better whole job counts;
- printed: the Ray overhead ratio (whole job and per phase), the halo sizes and the bytes
  each layer's shuffle moved (from the Ray job's summary), and how far the Ray result is
  from the local one (embeddings max abs difference, predicted categories equal, the
  `similar` lists' recall@10 against the local lists).

- the pull on its own line: the local pull (one stream of nodes, one of edges) against the
  Ray one (a read task per key range, GRAPHSVC_RAY_READERS at once, the embedded store
  read-only in the workers), with the ranges and the seconds of each side. `--pull-only`
  times just that (`load_node_graph` against `pull_node_graph_on_ray`, a Ray of W CPUs
  started once, alternating, best of the rounds) and checks both pulled the same graph.
- `--texts-only`: the same for embed-movies' and reindex movies' pull: `load_texts` against
  `pull_texts_on_ray` over N movies (the sample catalogue's documents repeated under new
  keys, every 10th without a description), checking both give the same keys, texts and
  count skipped.

On 2 cores no speed-up is expected: Ray's workers, Triton and the driver share them. What
this measures is the overhead and the bytes moved. Without the executor seam
(`EmbedProductsConfig` has no `executor` field) only the local half runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from embed_products_scale import build  # noqa: E402

from graphsvc.index.knn import recall_at_k  # noqa: E402
from graphsvc.triton.client import TritonClient  # noqa: E402
from graphsvc.triton.process import TritonServer  # noqa: E402
from jobs.embed_products import EmbedProductsConfig, embed_products  # noqa: E402
from jobs.export_models import export_graphsage  # noqa: E402
from tests.support import free_ports  # noqa: E402


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ray_config(partitions: int, workers: int) -> EmbedProductsConfig | None:
    """The Ray job's config, or None where the executor seam is not in this checkout."""
    fields = {f.name for f in dataclasses.fields(EmbedProductsConfig)}
    if "executor" not in fields:
        return None
    extra = {"ray_actors": workers} if "ray_actors" in fields else {}
    return EmbedProductsConfig(executor="ray", ray_address=None, partitions=partitions, **extra)


def written(store) -> dict[str, np.ndarray]:
    """What the job wrote back, in key order: embeddings, predicted categories, similar keys."""
    table = pa.Table.from_batches(list(store.pull("products", {
        "embedding": pa.list_(pa.float32()), "predicted_category": pa.int64(),
        "similar": pa.list_(pa.struct([("_key", pa.string()), ("score", pa.float32())]))})))
    table = table.sort_by("_key")
    keys = table["_key"].to_numpy(zero_copy_only=False)
    position = {key: i for i, key in enumerate(keys)}
    n = len(keys)
    embedding = table["embedding"].combine_chunks().flatten().to_numpy().reshape(n, -1)
    similar = np.full((n, 10), -1, np.int64)
    for i, entries in enumerate(table["similar"].to_pylist()):
        ids = [position[e["_key"]] for e in entries[:10]]
        similar[i, : len(ids)] = ids
    return {"embedding": embedding, "category": table["predicted_category"].to_numpy(), "similar": similar}


def find(summary, *names):
    """The first value under any of `names`, searching the summary's nested dicts."""
    if isinstance(summary, dict):
        for name in names:
            if name in summary:
                return summary[name]
        for value in summary.values():
            found = find(value, *names)
            if found is not None:
                return found
    return None


def layer_traffic(summary: dict) -> list[dict]:
    """Per layer: how its input reached the partitions (shuffle of halo rows or broadcast)
    and the bytes that moved, as the Ray job's summary reports them."""
    layers = find(summary, "layers")
    return [layer for layer in layers if isinstance(layer, dict)] if isinstance(layers, list) else []


def pull_only(store, workers: int, rounds: int) -> dict:
    """The pull alone, local against Ray (see the module's docstring)."""
    import ray

    from graphsvc.distributed.cluster import init_ray
    from graphsvc.distributed.pull import pull_node_graph_on_ray
    from graphsvc.graph.datasets import load_node_graph

    init_ray(num_cpus=workers)
    seconds: dict[str, list[float]] = {"local": [], "ray": []}
    try:
        for _ in range(rounds):
            started = time.perf_counter()
            local = load_node_graph(store, "products", "bought_together")
            seconds["local"].append(round(time.perf_counter() - started, 2))
            started = time.perf_counter()
            pulled, report = pull_node_graph_on_ray(store, "products", "bought_together", readers=workers)
            seconds["ray"].append(round(time.perf_counter() - started, 2))
            say(f"pull: local {seconds['local'][-1]} s, ray {seconds['ray'][-1]} s ({report})")
    finally:
        ray.shutdown()
    same = (local.keys.equals(pulled.keys) and np.array_equal(local.features, pulled.features)
            and np.array_equal(local.graph.indptr, pulled.graph.indptr)
            and np.array_equal(local.graph.indices, pulled.graph.indices))
    return {"seconds": seconds, "ratio": round(min(seconds["ray"]) / min(seconds["local"]), 2), "ray": report,
            "same_graph": bool(same)}


def texts_only(work: Path, movies: int, workers: int, rounds: int) -> dict:
    """The text pull alone, local against Ray (see the module's docstring)."""
    import ray

    from graphsvc.distributed.cluster import init_ray
    from graphsvc.distributed.pull import pull_texts_on_ray
    from graphsvc.graph.datasets import load_texts
    from graphsvc.store import open_store
    from jobs.synth import MOVIES_SOURCE

    sample = [json.loads(line) for line in MOVIES_SOURCE.read_text().splitlines()]
    picked = [sample[i % len(sample)] for i in range(movies)]
    table = pa.table({"_key": [f"m{i:08d}" for i in range(movies)], "title": [m["title"] for m in picked],
                      "description": [None if i % 10 == 3 else m["description"] for i, m in enumerate(picked)]})
    store = open_store(str(work / "movies.duckdb"), create=True)
    store.create_collection("movies")
    store.upsert_table("movies", table)
    init_ray(num_cpus=workers)
    seconds: dict[str, list[float]] = {"local": [], "ray": []}
    try:
        for _ in range(rounds):
            started = time.perf_counter()
            local = load_texts(store, "movies", "description", "title")
            seconds["local"].append(round(time.perf_counter() - started, 2))
            started = time.perf_counter()
            pulled, report = pull_texts_on_ray(store, "movies", "description", "title", readers=workers)
            seconds["ray"].append(round(time.perf_counter() - started, 2))
            say(f"texts: local {seconds['local'][-1]} s, ray {seconds['ray'][-1]} s ({report})")
    finally:
        ray.shutdown()
        store.close()
    same = local[0].equals(pulled[0]) and local[1] == pulled[1] and local[2] == pulled[2]
    return {"movies": movies, "megabytes": round(table.nbytes / 1e6, 1), "seconds": seconds,
            "ratio": round(min(seconds["ray"]) / min(seconds["local"]), 2), "ray": report, "same_texts": bool(same)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=200_000)
    parser.add_argument("--degree", type=float, default=50.0)
    parser.add_argument("--workers", type=int, default=2, help="Ray actors calling Triton")
    parser.add_argument("--partitions", type=int, default=4, help="node partitions on Ray")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--pull-only", action="store_true", help="time only the pull, local against Ray")
    parser.add_argument("--texts-only", action="store_true", help="time only the movies' text pull, local against Ray")
    parser.add_argument("--movies", type=int, default=200_000, help="movies for --texts-only")
    args = parser.parse_args()
    # the Ray the job starts runs its workers with this environment: they import this checkout
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    on_ray = ray_config(args.partitions, args.workers)
    if on_ray is None:
        say("EmbedProductsConfig has no `executor` field in this checkout: only the local half runs")

    runs: dict[str, list[dict]] = {"local": [], "ray": []}
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="graphsvc-bench-") as tmp:
        work = Path(tmp)
        if args.texts_only:
            texts = texts_only(work, args.movies, args.workers, max(args.rounds, 1))
            if args.json:
                print(json.dumps({"texts": texts}, indent=2))
                return
            print(f"text pull of {texts['movies']:,} movies ({texts['megabytes']} MB): local "
                  f"{min(texts['seconds']['local']):.2f} s, Ray {min(texts['seconds']['ray']):.2f} s "
                  f"({texts['ratio']}× local; rounds {texts['seconds']}); {texts['ray']['ranges']} ranges, "
                  f"{texts['ray']['readers']} readers, seconds {texts['ray']['seconds']}; "
                  f"same texts: {texts['same_texts']}")
            return
        say(f"generating {args.products:,} products, mean degree {args.degree:g} …")
        store, graph, _, checkpoint = build(work, args.products, args.degree)
        if args.pull_only:
            pulls = pull_only(store, args.workers, max(args.rounds, 1))
            store.close()
            if args.json:
                print(json.dumps({"products": args.products, "edges": int(len(graph.edges)), "pull": pulls}, indent=2))
                return
            print(f"pull of {args.products:,} products, {len(graph.edges):,} co-purchases: local "
                  f"{min(pulls['seconds']['local']):.2f} s, Ray {min(pulls['seconds']['ray']):.2f} s "
                  f"({pulls['ratio']}× local; rounds {pulls['seconds']}); {pulls['ray']['node_ranges']} node and "
                  f"{pulls['ray']['edge_ranges']} edge ranges, {pulls['ray']['readers']} readers, "
                  f"seconds {pulls['ray']['seconds']}; same graph: {pulls['same_graph']}")
            return
        export_graphsage(work / "repository", checkpoint)
        http, grpc, metrics = free_ports(3)
        with TritonServer(work / "repository", http_port=http, grpc_port=grpc, metrics_port=metrics,
                          runtime_dir=work / "runtime") as server, TritonClient(server.grpc_url) as triton:
            for _ in range(args.rounds):
                for name, config in (("local", EmbedProductsConfig()), ("ray", on_ray)):
                    if config is None:
                        continue
                    started = time.perf_counter()
                    summary = embed_products(store, triton, work / f"indexes-{name}", config)
                    summary["wall_seconds"] = round(time.perf_counter() - started, 2)
                    runs[name].append(summary)
                    results[name] = written(store)
                    say(f"{name}: whole job {summary['wall_seconds']} s (phases {summary['seconds']})")
        store.close()

    best = {name: min(done, key=lambda r: r["wall_seconds"]) for name, done in runs.items() if done}
    report: dict = {"products": args.products, "edges": int(len(graph.edges)), "workers": args.workers,
                    "partitions": args.partitions,
                    "local": {"wall_seconds": [r["wall_seconds"] for r in runs["local"]],
                              "seconds": best["local"]["seconds"],
                              "nodes_per_second": best["local"]["nodes_per_second"],
                              "similar": best["local"]["similar"]}}
    if "ray" in best:
        ray_best = best["ray"]
        report["ray"] = {"wall_seconds": [r["wall_seconds"] for r in runs["ray"]], "seconds": ray_best["seconds"],
                         "pull": find(ray_best, "pull"),
                         "nodes_per_second": ray_best["nodes_per_second"], "similar": ray_best["similar"],
                         "halo": find(ray_best, "halo", "halo_sizes"),
                         "halo_share": find(ray_best, "halo_share"),
                         "layers": layer_traffic(ray_best)}
        report["overhead"] = {"whole_job": round(ray_best["wall_seconds"] / best["local"]["wall_seconds"], 2),
                              **{phase: round(ray_best["seconds"][phase] / seconds, 2)
                                 for phase, seconds in best["local"]["seconds"].items()
                                 if phase in ray_best["seconds"] and seconds > 0}}
        local, distributed = results["local"], results["ray"]
        report["equal"] = {
            "embedding_max_abs_diff": float(np.abs(local["embedding"] - distributed["embedding"]).max()),
            "categories_equal": float((local["category"] == distributed["category"]).mean()),
            "similar_recall_at_10_vs_local": round(recall_at_k(distributed["similar"], local["similar"]), 4),
        }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"embed-products on {args.products:,} products, {report['edges']:,} co-purchases "
          f"(mean degree {args.degree:g})")
    print(f"  local            whole job {min(report['local']['wall_seconds']):>8.1f} s   "
          f"{report['local']['nodes_per_second']:>10,.0f} nodes/s   phases {report['local']['seconds']}")
    if "ray" not in report:
        print("  ray              not run (no executor seam in this checkout)")
        return
    print(f"  ray ({args.workers} workers, {args.partitions} partitions) whole job "
          f"{min(report['ray']['wall_seconds']):.1f} s   {report['ray']['nodes_per_second']:,.0f} nodes/s   "
          f"phases {report['ray']['seconds']}")
    print(f"  Ray overhead: whole job {report['overhead']['whole_job']}× the local one; per phase "
          f"{ {k: v for k, v in report['overhead'].items() if k != 'whole_job'} }")
    pull = report["ray"].get("pull") or {}
    print(f"  pull: local {report['local']['seconds'].get('pull')} s, Ray {report['ray']['seconds'].get('pull')} s "
          f"({pull.get('node_ranges')} node / {pull.get('edge_ranges')} edge ranges, {pull.get('readers')} readers, "
          f"{pull.get('seconds')})")
    print(f"  halo sizes {report['ray']['halo']} (their sum / nodes {report['ray']['halo_share']})")
    for layer in report["ray"]["layers"]:
        print(f"  layer {layer.get('layer')}: {layer.get('route')}, {layer.get('bytes_moved', 0) / 1e6:,.1f} MB moved "
              f"in {layer.get('seconds')} s")
    print(f"  Ray vs local: embeddings max abs diff {report['equal']['embedding_max_abs_diff']:.2e}, "
          f"categories equal {report['equal']['categories_equal']:.4f}, similar recall@10 "
          f"{report['equal']['similar_recall_at_10_vs_local']}")


if __name__ == "__main__":
    main()
