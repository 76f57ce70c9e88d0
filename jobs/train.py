"""`jobs train-graphsage`: train GraphSAGE on a node collection of the store.

Recipe: pull nodes + edges → CSR → seeded split → mini-batches from our neighbour
sampler → early stopping on validation accuracy → best checkpoint in the workshop's
format, with metrics as JSON beside it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from graphsvc.datasets import NodeGraph, load_node_graph
from graphsvc.errors import StoreError
from graphsvc.graph import NeighbourSampler
from graphsvc.models.graphsage import GraphSAGE, load_checkpoint, save_checkpoint
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
    split: tuple[float, float] = (0.6, 0.2)  # train, valid; the rest is test
    seed: int = 0


def split_nodes(labelled: np.ndarray, split: tuple[float, float], seed: int) -> dict[str, np.ndarray]:
    order = np.random.default_rng(seed).permutation(labelled)
    n_train = int(len(order) * split[0])
    n_valid = int(len(order) * split[1])
    return {
        "train": np.sort(order[:n_train]),
        "valid": np.sort(order[n_train : n_train + n_valid]),
        "test": np.sort(order[n_train + n_valid :]),
    }


def _batches(nodes: np.ndarray, size: int):
    for start in range(0, len(nodes), size):
        yield nodes[start : start + size]


@torch.no_grad()
def predict(model: GraphSAGE, data: NodeGraph, nodes: np.ndarray, fanouts: Sequence[int],
            batch_size: int = 1024, seed: int = 0) -> np.ndarray:
    model.eval()
    sampler = NeighbourSampler(data.graph, fanouts, seed=seed)
    x = torch.from_numpy(data.features)
    predictions = []
    for number, batch in enumerate(_batches(nodes, batch_size)):
        sub = sampler.sample(batch, batch_number=number)
        _, logits = model(x[sub.nodes], torch.from_numpy(sub.edge_index), torch.from_numpy(sub.sizes))
        predictions.append(logits.argmax(1).numpy())
    return np.concatenate(predictions) if predictions else np.zeros(0, np.int64)


def train_graphsage(
    store: GraphStore,
    out: Path,
    nodes: str = "products",
    edges: str = "bought_together",
    features: str = "features",
    label: str = "category",
    config: TrainingConfig = TrainingConfig(),
    on_epoch: Callable[[dict], None] | None = None,
) -> dict:
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    data = load_node_graph(store, nodes, edges, features, label)
    labelled = np.flatnonzero(data.labels >= 0)
    if len(labelled) < 10:
        raise StoreError(f"{nodes}: only {len(labelled)} documents carry '{label}'; too few to train")
    num_classes = int(data.labels.max()) + 1
    splits = split_nodes(labelled, config.split, config.seed)
    model = GraphSAGE(data.features.shape[1], config.hidden, num_classes, config.num_layers, config.dropout)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    sampler = NeighbourSampler(data.graph, config.fanouts, seed=config.seed)
    x = torch.from_numpy(data.features)
    y = torch.from_numpy(data.labels)
    rng = np.random.default_rng(config.seed)

    best = {"valid": -1.0, "epoch": 0}
    history = []
    for epoch in range(1, config.epochs + 1):
        model.train()
        total_loss, seen = 0.0, 0
        for number, batch in enumerate(_batches(rng.permutation(splits["train"]), config.batch_size)):
            sub = sampler.sample(batch, batch_number=epoch * 100_000 + number)
            optimiser.zero_grad()
            _, logits = model(x[sub.nodes], torch.from_numpy(sub.edge_index), torch.from_numpy(sub.sizes))
            loss = torch.nn.functional.cross_entropy(logits, y[batch])
            loss.backward()
            optimiser.step()
            total_loss += loss.item() * len(batch)
            seen += len(batch)
        accuracy = {
            split: float((predict(model, data, splits[split], config.fanouts) == data.labels[splits[split]]).mean())
            for split in ("train", "valid")
        }
        record = {"epoch": epoch, "loss": total_loss / max(seen, 1), **accuracy}
        history.append(record)
        if on_epoch:
            on_epoch(record)
        if accuracy["valid"] > best["valid"]:
            best = {"valid": accuracy["valid"], "epoch": epoch}
            save_checkpoint(out, model, epoch=epoch, best_acc=accuracy["valid"])
        elif epoch - best["epoch"] >= config.patience:
            break

    best_model, _ = load_checkpoint(out)
    accuracy = {
        split: float((predict(best_model, data, splits[split], config.fanouts) == data.labels[splits[split]]).mean())
        for split in ("train", "valid", "test")
    }
    metrics = {
        "checkpoint": str(out),
        "nodes": nodes,
        "edges": edges,
        "num_nodes": int(len(data.keys)),
        "num_edges": int(data.graph.num_edges),
        "num_classes": num_classes,
        "best_epoch": best["epoch"],
        "epochs_run": len(history),
        "accuracy": accuracy,
        "seconds": round(time.perf_counter() - started, 2),
        "history": history,
        "config": {**config.__dict__, "fanouts": list(config.fanouts), "split": list(config.split)},
    }
    Path(str(out) + ".metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
