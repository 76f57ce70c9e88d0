"""`jobs train-graphsage`: train GraphSAGE on a node collection of the store, or on an
OGB dataset directory (`--ogb-root`).

Recipe: pull nodes + edges → CSR → hold out a seeded share of the edges (they are what
`jobs evaluate` asks the embeddings to find again, so the model never sees them) →
train/valid/test split (an attribute, the OGB split, or seeded random) → mini-batches
from our neighbour sampler → early stopping on validation accuracy → best checkpoint in
the workshop's format (`{"epoch", "best_acc", "state_dict"}`), metrics as JSON beside it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from graphsvc.checkpoints import write_metrics
from graphsvc.datasets import NodeGraph, load_node_graph
from graphsvc.errors import ConfigError, StoreError
from graphsvc.evaluation.inference import embed_layerwise
from graphsvc.graph import CSRGraph, NeighbourSampler
from graphsvc.models.graphsage import GraphSAGE, load_checkpoint, save_checkpoint
from graphsvc.splits import EdgeHoldout, hold_out_edges, random_split
from graphsvc.store.base import GraphStore

@dataclass(frozen=True)
class TrainingConfig:
    hidden: int = 256
    num_layers: int = 3
    fanouts: tuple[int, ...] = (15, 10, 5)
    batch_size: int = 256
    epochs: int = 20
    patience: int = 5
    learning_rate: float = 0.005
    dropout: float = 0.5
    split: tuple[float, float] = (0.6, 0.2)  # random split: train, valid; the rest is test
    split_attribute: str | None = None  # or: an attribute saying train/valid/test per document
    holdout_edges: float = 0.1  # share of undirected edges kept from training for `jobs evaluate`
    seed: int = 0


def _batches(nodes: np.ndarray, size: int):
    for start in range(0, len(nodes), size):
        yield nodes[start : start + size]


@torch.no_grad()
def predict(model: GraphSAGE, graph: CSRGraph, features: np.ndarray, nodes: np.ndarray, fanouts: Sequence[int],
            batch_size: int = 1024, seed: int = 0) -> np.ndarray:
    """Predicted classes of `nodes` from sampled computation graphs (seeded: the same
    answer every call)."""
    model.eval()
    sampler = NeighbourSampler(graph, fanouts, seed=seed)
    x = torch.from_numpy(features)
    predictions = []
    for number, batch in enumerate(_batches(nodes, batch_size)):
        sub = sampler.sample(batch, batch_number=number)
        _, logits = model(x[sub.nodes], torch.from_numpy(sub.edge_index), torch.from_numpy(sub.sizes))
        predictions.append(logits.argmax(1).numpy())
    return np.concatenate(predictions) if predictions else np.zeros(0, np.int64)


def training_splits(data: NodeGraph, config: TrainingConfig) -> tuple[dict[str, np.ndarray], dict]:
    """The node split and how it was made (recorded in the metrics so `jobs evaluate`
    can make it again)."""
    if data.labels is None:
        raise StoreError(f"{data.source}: no labels to train on")
    labelled = np.flatnonzero(data.labels >= 0)
    if data.splits is not None:
        splits = {name: nodes[data.labels[nodes] >= 0] for name, nodes in data.splits.items()}
        how = {"source": "attribute", "attribute": config.split_attribute} if config.split_attribute \
            else {"source": "dataset"}
    else:
        splits = random_split(data.keys, labelled, config.split, config.seed)
        how = {"source": "random", "fractions": list(config.split), "seed": config.seed}
    for name in ("train", "valid"):
        if len(splits[name]) == 0:
            raise ConfigError(f"{data.source}: the {name} split has no labelled nodes "
                              f"({len(labelled)} labelled in all) — early stopping needs both train and valid")
    how["sizes"] = {name: int(len(nodes)) for name, nodes in splits.items()}
    return splits, how


def train_on(
    data: NodeGraph,
    out: Path,
    config: TrainingConfig = TrainingConfig(),
    on_epoch: Callable[[dict], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
    described: dict | None = None,
) -> dict:
    """Train on loaded data; writes the best checkpoint to `out` and its metrics beside it."""
    started = time.perf_counter()
    if len(config.fanouts) != config.num_layers:
        raise ConfigError(f"{len(config.fanouts)} fanouts for {config.num_layers} layers")
    torch.manual_seed(config.seed)
    labelled = np.flatnonzero(data.labels >= 0) if data.labels is not None else np.zeros(0, np.int64)
    if len(labelled) < 10:
        raise StoreError(f"{data.source}: only {len(labelled)} nodes carry a label; too few to train")
    num_classes = int(data.labels.max()) + 1
    splits, split_record = training_splits(data, config)
    holdout: EdgeHoldout = hold_out_edges(data.graph, data.keys, config.holdout_edges, config.seed)
    graph = holdout.graph

    model = GraphSAGE(data.features.shape[1], config.hidden, num_classes, config.num_layers, config.dropout)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    sampler = NeighbourSampler(graph, config.fanouts, seed=config.seed)
    x = torch.from_numpy(data.features)
    y = torch.from_numpy(data.labels)
    rng = np.random.default_rng(config.seed)

    best = {"valid": -1.0, "epoch": 0}
    history = []
    for epoch in range(1, config.epochs + 1):
        epoch_started = time.perf_counter()
        model.train()
        total_loss, correct, seen = 0.0, 0, 0
        for number, batch in enumerate(_batches(rng.permutation(splits["train"]), config.batch_size)):
            sub = sampler.sample(batch, batch_number=epoch * 1_000_000 + number)
            optimiser.zero_grad()
            _, logits = model(x[sub.nodes], torch.from_numpy(sub.edge_index), torch.from_numpy(sub.sizes))
            loss = torch.nn.functional.cross_entropy(logits, y[batch])
            loss.backward()
            optimiser.step()
            total_loss += loss.item() * len(batch)
            correct += int((logits.argmax(1) == y[batch]).sum())
            seen += len(batch)
            if on_batch:
                on_batch(len(batch))
        valid = predict(model, graph, data.features, splits["valid"], config.fanouts)
        record = {
            "epoch": epoch,
            "loss": round(total_loss / max(seen, 1), 6),
            "train": round(correct / max(seen, 1), 6),  # running accuracy of the epoch's batches
            "valid": round(float((valid == data.labels[splits["valid"]]).mean()), 6),
            "seconds": round(time.perf_counter() - epoch_started, 3),
        }
        history.append(record)
        improved = record["valid"] > best["valid"]
        if improved:
            best = {"valid": record["valid"], "epoch": epoch}
            save_checkpoint(out, model, epoch=epoch, best_acc=record["valid"])
        if on_epoch:
            on_epoch({**record, "best": improved})
        if not improved and epoch - best["epoch"] >= config.patience:
            break

    # the best checkpoint, on full neighbourhoods (as the embed job serves it)
    best_model, _ = load_checkpoint(out)
    _, logits = embed_layerwise(best_model, graph, data.features)
    predicted = logits.argmax(1)
    accuracy = {name: round(float((predicted[nodes] == data.labels[nodes]).mean()), 6) if len(nodes) else None
                for name, nodes in splits.items()}
    metrics = {
        "checkpoint": str(out),
        "data": {"source": data.source, **(described or {})},
        "num_nodes": int(len(data.keys)),
        "num_edges": int(data.graph.num_edges // 2),
        "feature_dim": int(data.features.shape[1]),
        "num_classes": num_classes,
        "split": split_record,
        "holdout_edges": {"fraction": config.holdout_edges, "seed": config.seed, "count": int(len(holdout.held_out))},
        "best_epoch": best["epoch"],
        "epochs_run": len(history),
        "stopped_early": len(history) < config.epochs,
        "accuracy": accuracy,
        "accuracy_note": "best checkpoint, full-neighbourhood layer-wise inference on the graph without held-out edges",
        "seconds": round(time.perf_counter() - started, 2),
        "history": history,
        "config": {**asdict(config), "fanouts": list(config.fanouts), "split": list(config.split)},
    }
    write_metrics(out, metrics)
    return metrics


def train_graphsage(
    store: GraphStore,
    out: Path,
    nodes: str = "products",
    edges: str = "bought_together",
    features: str = "features",
    label: str = "category",
    config: TrainingConfig = TrainingConfig(),
    on_epoch: Callable[[dict], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> dict:
    """Train on a node collection and an edge collection of the store."""
    data = load_node_graph(store, nodes, edges, features, label, split=config.split_attribute)
    described = {"nodes": nodes, "edges": edges, "features": features, "label": label,
                 "split_attribute": config.split_attribute, "dangling_edges": data.dangling_edges}
    return train_on(data, out, config, on_epoch, on_batch, described)


def train_graphsage_ogb(
    root: Path,
    out: Path,
    config: TrainingConfig = TrainingConfig(),
    split: str | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> dict:
    """Train on an OGB node dataset on disk (the layout `ogb` writes, e.g. ogbn_products/)."""
    from graphsvc.ogb import load_ogb_node_dataset

    data = load_ogb_node_dataset(root, split)
    if data.splits is None and config.split_attribute:
        raise ConfigError("--split-attribute applies to the store; an OGB directory brings its split in split/")
    return train_on(data, out, config, on_epoch, on_batch, {"ogb_root": str(root), "ogb_split": split})
