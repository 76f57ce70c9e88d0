"""Evaluation figures: `jobs evaluate` on the shipped sample products, and on a larger
generated catalogue whose index is IVF (approximate), in one run.

    .venv/bin/python bench/evaluate_sample.py [--ivf-products 60000] [--ivf-epochs 1] [--json]

For each catalogue (temp dir, removed afterwards):
1. products dump → fresh embedded store (the sample: arango_dumps/products; the large
   one: `jobs synth products` with the same generator);
2. a checkpoint: the shipped checkpoints/graphsage_products.pth.tar for the sample
   (trained with 10% of the co-purchases held out), a quick training for the large one;
3. what `jobs embed-products` publishes, computed in this process with the same weights
   and the same layer-wise full-neighbourhood computation it has Triton do: embedding +
   predicted_category written back, the index built and nprobe-calibrated by the same
   library calls (flat below 50,000 vectors, IVF above), published;
4. `jobs evaluate`: category accuracy per split, recall@10 of held-out co-purchases by
   embeddings vs raw features vs random (baselines measured in the same run), the
   published index's recall@10 vs exact search, the PCA figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from graphsvc.evaluation.ranking import held_out_queries, link_recall_at_k
from graphsvc.graph.datasets import load_node_graph
from graphsvc.graph.splits import hold_out_edges
from graphsvc.index.artifacts import publish
from graphsvc.index.faiss_index import VectorIndex
from graphsvc.index.similar import embedding_array
from graphsvc.inference.layerwise import embed_layerwise
from graphsvc.models.graphsage import load_checkpoint
from graphsvc.store import open_store
from jobs.evaluate import EvaluateConfig, evaluate
from jobs.restore_dumps import restore_dumps
from jobs.synth import ProductGraphSpec, write_products_dump
from jobs.train import TrainingConfig, train_graphsage

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DUMP = REPO_ROOT / "arango_dumps" / "products"
SHIPPED_CHECKPOINT = REPO_ROOT / "checkpoints" / "graphsage_products.pth.tar"


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def publish_like_embed_products(store, index_dir: Path, checkpoint: Path) -> dict:
    data = load_node_graph(store, "products", "bought_together")
    model, _ = load_checkpoint(checkpoint)
    started = time.perf_counter()
    embeddings, logits = embed_layerwise(model, data.graph, data.features)
    embed_seconds = time.perf_counter() - started
    index = VectorIndex.build(embeddings, metric="cosine")
    calibration = index.calibrate_nprobe(k=10)  # the jobs' target
    store.update_attributes("products", pa.table({"_key": data.keys, "embedding": embedding_array(embeddings),
                                                  "predicted_category": pa.array(logits.argmax(1))}))
    publish(index_dir, "products", index, data.keys, model={"name": "graphsage", "version": 1},
            extra={"job": "bench/evaluate_sample.py", "calibration": calibration})
    return {"kind": index.kind, "calibration": calibration, "embed_seconds": round(embed_seconds, 2)}


def category_ceiling(store, report: dict, config: EvaluateConfig) -> float:
    """Recall@10 of a ranking that knows every node's true category and nothing else
    (same category first, random order within): what a representation that only
    separates categories could reach on these held-out edges. Context, not a baseline a
    model could use."""
    data = load_node_graph(store, "products", "bought_together", label="category")
    link = report["link_prediction"]
    holdout = hold_out_edges(data.graph, data.keys, link["fraction"], link["seed"])
    queries = held_out_queries(holdout.held_out, config.link_queries, config.seed)
    rng = np.random.default_rng(config.seed)
    labels = data.labels

    def same_category(rows: np.ndarray) -> np.ndarray:
        return (labels[rows][:, None] == labels[None, :]) + 0.5 * rng.random((len(rows), len(labels)), np.float32)

    return link_recall_at_k(same_category, holdout.graph, queries, config.k)["recall_at_k"]


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 1) if b else None


def run_catalogue(name: str, root: Path, dump: Path, checkpoint: Path | None, epochs: int) -> dict:
    store_path, index_dir = root / f"{name}.duckdb", root / f"{name}-indexes"
    started = time.perf_counter()
    with open_store(str(store_path), create=True) as store:
        restore_dumps(store, [dump])
        training = None
        if checkpoint is None:
            checkpoint = root / f"{name}.pth.tar"
            say(f"[{name}] training {epochs} epochs …")
            training = train_graphsage(store, checkpoint, config=TrainingConfig(epochs=epochs, patience=epochs))
        say(f"[{name}] embedding in-process, indexing, publishing …")
        published = publish_like_embed_products(store, index_dir, checkpoint)
        say(f"[{name}] evaluating …")
        config = EvaluateConfig(checkpoint=checkpoint, out=root / f"{name}-report")
        report = evaluate(store, index_dir, config)
        ceiling = category_ceiling(store, report, config)
    link = report["link_prediction"]["rankings"]
    embedding = link["embeddings"]["recall_at_k"]
    return {
        "catalogue": name,
        "products": report["num_nodes"],
        "edges": report["num_edges"],
        "checkpoint": str(checkpoint),
        "trained_here": training is not None,
        "category_accuracy": {k: v["accuracy"] for k, v in report["category_accuracy"]["splits"].items()},
        "held_out_edges": report["link_prediction"]["held_out_edges"],
        "recall_at_10": {k: v["recall_at_k"] for k, v in link.items()},
        "expected_random_recall_at_10": link["random"]["expected_random"],
        "category_ceiling_recall_at_10": ceiling,
        "embeddings_over_raw_features": _ratio(embedding, link["raw features"]["recall_at_k"]),
        "embeddings_over_random": _ratio(embedding, link["random"]["recall_at_k"]),
        "embeddings_over_expected_random": _ratio(embedding, link["random"]["expected_random"]),
        "embeddings_over_category_ceiling": round(embedding / ceiling, 3) if ceiling else None,
        "queries": link["embeddings"]["queries"],
        "hits": {k: v["hits"] for k, v in link.items()},
        "index": {k: report["index"].get(k) for k in ("kind", "nlist", "nprobe", "sample", "recall_at_k")},
        "index_calibration_at_build": published["calibration"],
        "projection_explained_variance": report["figures"]["projection"]["explained_variance"],
        "notes": report["notes"],
        "report": str(root / f"{name}-report" / "index.html"),
        "seconds": round(time.perf_counter() - started, 1),
        "evaluate_seconds": report["seconds"]["total"],
    }


def _shown(ratio: float | None) -> str:
    return f"{ratio}×" if ratio is not None else "∞ (the baseline found none)"


def print_table(results: list[dict]) -> None:
    for r in results:
        acc, recall, index = r["category_accuracy"], r["recall_at_10"], r["index"]
        print(f"\n{r['catalogue']}: {r['products']:,} products, {r['edges']:,} co-purchases, "
              f"{r['held_out_edges']:,} held out ({'trained here' if r['trained_here'] else r['checkpoint']})")
        print(f"  category accuracy      train {acc['train']:.3f}  valid {acc['valid']:.3f}  test {acc['test']:.3f}")
        hits = r["hits"]
        print(f"  recall@10 held-out     embeddings {recall['embeddings']:.4f} ({hits['embeddings']}/{r['queries']})  "
              f"raw features {recall['raw features']:.4f} ({hits['raw features']})  random {recall['random']:.4f} "
              f"({hits['random']}; expected {r['expected_random_recall_at_10']:.4f})")
        print(f"  ratios                 embeddings / raw features {_shown(r['embeddings_over_raw_features'])}, "
              f"/ random {_shown(r['embeddings_over_random'])}, / expected random "
              f"{_shown(r['embeddings_over_expected_random'])}")
        print(f"  category ceiling       {r['category_ceiling_recall_at_10']:.4f} (true categories, random within); "
              f"embeddings reach {r['embeddings_over_category_ceiling']:.0%} of it")
        nprobe = f", nlist {index['nlist']}, nprobe {index['nprobe']}" if index["kind"] == "ivf" else ""
        print(f"  index recall@10        {index['recall_at_k']:.4f} vs exact ({index['kind']}{nprobe}, "
              f"{index['sample']} queries)")
        print(f"  PCA variance PC1/PC2   {r['projection_explained_variance']}")
        print(f"  time                   {r['seconds']}s in all, evaluate {r['evaluate_seconds']}s; "
              f"report {r['report']}")
        for note in r["notes"]:
            print(f"  note: {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ivf-products", type=int, default=60_000,
                        help="Products in the generated catalogue (>= 50,000 gives an IVF index; 0 skips it).")
    parser.add_argument("--ivf-epochs", type=int, default=1,
                        help="Training epochs for the generated catalogue (one already reaches ~0.99 valid accuracy).")
    parser.add_argument("--keep", type=Path, default=None, help="Keep the reports in this directory.")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    results = []
    with tempfile.TemporaryDirectory(prefix="graphsvc-evaluate-") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        if not SHIPPED_CHECKPOINT.exists():
            say(f"{SHIPPED_CHECKPOINT} is missing: training one on the sample")
        results.append(run_catalogue("sample", root, SAMPLE_DUMP,
                                     SHIPPED_CHECKPOINT if SHIPPED_CHECKPOINT.exists() else None, 20))
        if args.ivf_products:
            dump = root / "generated-dump"
            write_products_dump(dump, ProductGraphSpec(num_products=args.ivf_products, seed=23))
            results.append(run_catalogue("generated", root, dump, None, args.ivf_epochs))
    if args.keep is None:
        for r in results:
            r["report"] = "(removed with the temp dir; --keep DIR keeps it)"
    summary = {"results": results,
               "load_average_1min": {"start": round(load_before, 2), "end": round(os.getloadavg()[0], 2)}}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_table(results)
        print(f"\n1-minute load average: {summary['load_average_1min']['start']} at start, "
              f"{summary['load_average_1min']['end']} at end (2 cores, shared)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
