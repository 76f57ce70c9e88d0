"""`jobs evaluate`: what the embeddings are worth, as report.json + index.html + PNG figures.

Recipe: the checkpoint and its training metrics → nodes + edges from the store → the
same split and the same held-out edges as training → GraphSAGE in-process on the graph
*without* the held-out edges (the model never saw them either) → rank every node for
each held-out edge's end by embedding similarity, by raw features, by chance → category
accuracy per split from the written-back `predicted_category` (or the checkpoint when
nothing was written back) → the published FAISS index against exact search → a 2-D PCA
of a sample of embeddings coloured by category → report.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from graphsvc.errors import ConfigError, IndexNotFound
from graphsvc.evaluation.ranking import (
    cosine_scorer,
    held_out_queries,
    index_recall_at_k,
    link_recall_at_k,
    pca_2d,
    random_scorer,
)
from graphsvc.evaluation.report import (
    accuracy_figure,
    link_recall_figure,
    projection_figure,
    training_figure,
    write_report,
)
from graphsvc.graph.datasets import NodeGraph, load_node_graph
from graphsvc.graph.splits import hold_out_edges, random_split
from graphsvc.index.artifacts import load_current
from graphsvc.inference.layerwise import embed_layerwise
from graphsvc.models.checkpoints import read_metrics
from graphsvc.models.graphsage import load_checkpoint
from graphsvc.runs.timing import PhaseTimer
from graphsvc.store.base import GraphStore

DEFAULT_HOLDOUT = 0.1  # what `jobs train-graphsage` holds out unless told otherwise
DEFAULT_SPLIT = (0.6, 0.2)


@dataclass(frozen=True)
class EvaluateConfig:
    nodes: str = "products"
    edges: str = "bought_together"
    features: str = "features"
    label: str = "category"
    checkpoint: Path = Path("checkpoints/graphsage_products.pth.tar")
    out: Path = Path("var/evaluation/products")
    k: int = 10
    link_queries: int = 2000  # held-out edge ends ranked (a seeded sample when there are more)
    index_sample: int = 1000  # stored vectors used as queries against exact search
    projection_sample: int = 2000
    holdout_edges: float | None = None  # None: what the checkpoint's training held out
    seed: int = 0  # samples of queries and points, and the random ranking


def evaluate(store: GraphStore, index_dir: Path, config: EvaluateConfig = EvaluateConfig()) -> dict:
    timer = PhaseTimer()
    model, checkpoint_meta = load_checkpoint(config.checkpoint)
    training = read_metrics(config.checkpoint)
    notes: list[str] = []

    with timer("pull"):
        split_attribute = _trained_split_attribute(training)
        data = load_node_graph(store, config.nodes, config.edges, config.features, config.label, split=split_attribute)
    in_channels = model.convs[0].in_channels
    if data.features.shape[1] != in_channels:
        raise ConfigError(f"{config.checkpoint} expects {in_channels} features per node; "
                          f"'{config.nodes}.{config.features}' has {data.features.shape[1]}")
    if data.labels is None or not (data.labels >= 0).any():
        raise ConfigError(f"no document of '{config.nodes}' carries '{config.label}'")

    splits, split_note = _splits(data, training, notes)
    fraction, holdout_seed = _holdout_settings(training, config, notes)
    with timer("holdout_inference"):
        holdout = hold_out_edges(data.graph, data.keys, fraction, holdout_seed)
        recorded = (training or {}).get("holdout_edges", {}).get("count")
        if recorded is not None and recorded != len(holdout.held_out):
            notes.append(f"training held out {recorded} edges, the store's graph gives {len(holdout.held_out)} "
                         "now: the edges changed since training, so the model may have seen some held-out edges")
        unseen_embeddings, _ = embed_layerwise(model, holdout.graph, data.features)

    with timer("stored_attributes"):
        stored_embeddings, stored_predictions = _written_back(store, config.nodes, data.keys)
    with timer("full_graph_inference"):
        if stored_predictions is None or stored_embeddings is None:
            full_embeddings, logits = embed_layerwise(model, data.graph, data.features)
            source = "the checkpoint in-process (full graph, full neighbourhoods): nothing written back yet"
            predictions = logits.argmax(1)
            embeddings = full_embeddings
        else:
            source = "predicted_category and embedding written back by jobs embed-products"
            predictions, embeddings = stored_predictions, stored_embeddings

    accuracy = {
        "source": source,
        "note": f"Predictions from {source}; split: {split_note}.",
        "splits": {name: {"count": int(len(nodes)),
                          "accuracy": round(float((predictions[nodes] == data.labels[nodes]).mean()), 6)
                          if len(nodes) else None}
                   for name, nodes in splits.items()},
    }

    with timer("link_prediction"):
        link = _link_prediction(data, holdout, unseen_embeddings, config)
    with timer("index"):
        index = _index_recall(index_dir, config, len(data.keys))
    with timer("figures"):
        figures = _figures(config, data, accuracy, link, embeddings, training)

    report = {
        "nodes": config.nodes,
        "edges": config.edges,
        "checkpoint": str(config.checkpoint),
        "checkpoint_epoch": checkpoint_meta.get("epoch"),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "num_nodes": int(len(data.keys)),
        "num_edges": int(data.graph.num_edges // 2),
        "k": config.k,
        "category_accuracy": accuracy,
        "link_prediction": link,
        "index": index,
        "figures": figures,
        "notes": notes,
        "seconds": timer.summary(),
    }
    written = write_report(config.out, report)
    report["files"] = {name: str(path) for name, path in written.items()}
    return report


def _trained_split_attribute(training: dict | None) -> str | None:
    split = (training or {}).get("split") or {}
    return split.get("attribute") if split.get("source") == "attribute" else None


def _splits(data: NodeGraph, training: dict | None, notes: list[str]) -> tuple[dict[str, np.ndarray], str]:
    labelled = np.flatnonzero(data.labels >= 0)
    split = (training or {}).get("split") or {}
    if split.get("source") == "attribute" and data.splits is not None:
        return ({name: nodes[data.labels[nodes] >= 0] for name, nodes in data.splits.items()},
                f"attribute '{split['attribute']}', as in training")
    if split.get("source") == "random":
        fractions, seed = tuple(split["fractions"]), int(split["seed"])
        return (random_split(data.keys, labelled, fractions, seed),
                f"seeded random {fractions} seed {seed}, as in training")
    notes.append("the checkpoint's training split is not known for this collection (no training metrics, or it "
                 f"was trained elsewhere): a seeded random split {DEFAULT_SPLIT} seed 0 is used, which may include "
                 "nodes the model trained on in valid/test")
    return random_split(data.keys, labelled, DEFAULT_SPLIT, 0), f"seeded random {DEFAULT_SPLIT} seed 0 (assumed)"


def _holdout_settings(training: dict | None, config: EvaluateConfig, notes: list[str]) -> tuple[float, int]:
    recorded = (training or {}).get("holdout_edges")
    if config.holdout_edges is not None:
        if recorded and recorded.get("fraction") != config.holdout_edges:
            notes.append(f"--holdout-edges {config.holdout_edges} differs from training's {recorded.get('fraction')}: "
                         "the model saw some of the edges evaluated here")
        return config.holdout_edges, int((recorded or {}).get("seed", 0))
    if recorded is not None:
        return float(recorded["fraction"]), int(recorded["seed"])
    why = ("has no training metrics" if training is None
           else "has training metrics that do not say which edges were held out")
    notes.append(f"the checkpoint {why}: {DEFAULT_HOLDOUT:.0%} of edges (seed 0) are held out "
                 "here, but the model may have trained with them; link recall may be flattered")
    return DEFAULT_HOLDOUT, 0


def _written_back(store: GraphStore, nodes: str, keys: pa.Array) -> tuple[np.ndarray | None, np.ndarray | None]:
    """`embedding` and `predicted_category` as written back, in the order of `keys`;
    (None, None) unless every node has both."""
    attributes = {"embedding": pa.list_(pa.float32()), "predicted_category": pa.int64()}
    table = pa.Table.from_batches(list(store.pull(nodes, attributes)),
                                  schema=pa.schema([("_key", pa.string())] + list(attributes.items())))
    embedding = table.column("embedding").combine_chunks()
    predicted = table.column("predicted_category").combine_chunks()
    if table.num_rows != len(keys) or embedding.null_count or predicted.null_count or table.num_rows == 0:
        return None, None
    lengths = np.unique(embedding.value_lengths().to_numpy())
    if len(lengths) != 1:
        return None, None
    # the pull with written-back attributes may come in another order than the nodes
    order = pc.index_in(keys, value_set=table.column("_key").combine_chunks()).to_numpy(zero_copy_only=False)
    matrix = embedding.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(table.num_rows, -1)
    return matrix[order], predicted.to_numpy(zero_copy_only=False).astype(np.int64)[order]


def _link_prediction(data: NodeGraph, holdout, embeddings: np.ndarray, config: EvaluateConfig) -> dict:
    if len(holdout.held_out) == 0:
        return {"skipped": "no held-out edges (the checkpoint was trained with --holdout-edges 0)"}
    queries = held_out_queries(holdout.held_out, config.link_queries, config.seed)
    rankings = {
        "embeddings": link_recall_at_k(cosine_scorer(embeddings), holdout.graph, queries, config.k),
        "raw features": link_recall_at_k(cosine_scorer(data.features), holdout.graph, queries, config.k),
        "random": link_recall_at_k(random_scorer(len(data.keys), config.seed), holdout.graph, queries, config.k),
    }
    embedding, raw = rankings["embeddings"]["recall_at_k"], rankings["raw features"]["recall_at_k"]
    return {
        "held_out_edges": int(len(holdout.held_out)),
        "fraction": holdout.fraction,
        "seed": holdout.seed,
        "rankings": rankings,
        "embeddings_over_raw_features": round(embedding / raw, 3) if raw else None,
        "note": (f"{len(holdout.held_out):,} edges ({holdout.fraction:.0%}, seed {holdout.seed}) were held out of "
                 f"training and of the graph the embeddings here are computed on; for {len(queries):,} held-out edge "
                 f"ends, every other node not already a neighbour is ranked by cosine similarity, and a hit is the "
                 f"other end in the top {config.k}."),
    }


def _index_recall(index_dir: Path, config: EvaluateConfig, num_nodes: int) -> dict:
    try:
        loaded = load_current(index_dir, config.nodes)
    except IndexNotFound as exc:
        return {"skipped": str(exc)}
    result = index_recall_at_k(loaded, config.k, config.index_sample, config.seed)
    if loaded.manifest.count != num_nodes:
        result["note"] = f"the index holds {loaded.manifest.count} vectors, the collection {num_nodes} documents"
    return result


def _figures(config: EvaluateConfig, data: NodeGraph, accuracy: dict, link: dict, embeddings: np.ndarray,
             training: dict | None) -> dict:
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    figures = {"accuracy": {"file": accuracy_figure(accuracy["splits"], out / "accuracy.png"),
                            "title": "Category accuracy per split"}}
    if not link.get("skipped"):
        recalls = {name: row for name, row in link["rankings"].items()}
        figures["link_recall"] = {"file": link_recall_figure(recalls, config.k, out / "link_recall.png"),
                                  "title": f"Recall@{config.k} of held-out edges: embeddings, raw features, random"}
    labelled = np.flatnonzero(data.labels >= 0)
    rng = np.random.default_rng(config.seed)
    sample = np.sort(rng.choice(labelled, size=min(config.projection_sample, len(labelled)), replace=False))
    points, share = pca_2d(embeddings[sample])
    title = (f"PCA of {len(sample):,} embeddings by category "
             f"(PC1 {share[0]:.0%}, PC2 {share[1]:.0%} of variance)")
    figures["projection"] = {"file": projection_figure(points, data.labels[sample], title, out / "projection.png"),
                             "title": title, "method": "PCA", "sample": int(len(sample)),
                             "explained_variance": share}
    if training and training.get("history"):
        figures["training"] = {"file": training_figure(training["history"], out / "training.png"),
                               "title": "Training: accuracy and loss per epoch"}
    return figures
