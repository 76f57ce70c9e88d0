"""`jobs train-graphsage`: train GraphSAGE on a node collection of the store, or on an
OGB dataset directory (`--ogb-root`).

Recipe: pull nodes + edges → CSR → hold out a seeded share of the edges (they are what
`jobs evaluate` asks the embeddings to find again, so the model never sees them) →
train/valid/test split (an attribute, the OGB split, or seeded random) → mini-batches
from our neighbour sampler → early stopping on validation accuracy → best checkpoint in
the workshop's format (`{"epoch", "best_acc", "state_dict"}`), metrics as JSON beside it.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

# large CPU tensors on transparent huge pages: a training step allocates its activations
# afresh (tens of MB each), and 4 KB page faults cost as much as the arithmetic on them
# (torch reads this at its first large allocation; a user's own setting wins)
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import torch  # noqa: E402

from graphsvc.errors import ConfigError, StoreError
from graphsvc.graph import CSRGraph, NeighbourSampler
from graphsvc.graph.datasets import NodeGraph, load_node_graph
from graphsvc.graph.splits import EdgeHoldout, hold_out_edges, random_split
from graphsvc.inference.layerwise import embed_layerwise
from graphsvc.models.checkpoints import write_metrics
from graphsvc.models.graphsage import GraphSAGE, MeanAdjacency, load_checkpoint, mean_adjacencies, save_checkpoint
from graphsvc.settings import DEVICE, read
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
    device: str | None = None  # cpu or cuda; None: GRAPHSVC_DEVICE, else cuda when torch sees one


def training_device(requested: str | None = None) -> torch.device:
    """Where the model runs: `requested`, else GRAPHSVC_DEVICE, else CUDA when torch
    finds it and the CPU otherwise. Sampling always stays on the CPU."""
    name = requested or read(DEVICE) or ("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ConfigError(f"unknown device '{name}' (cpu or cuda)")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' asked for, but torch finds no CUDA device — use --device cpu")
    return torch.device(name)


def adam(model: torch.nn.Module, learning_rate: float) -> torch.optim.Adam:
    """Adam with its fused kernel: one pass per parameter, where the per-tensor loop of
    small parallel ops stalled for tens of milliseconds a step on a busy 2-core machine."""
    return torch.optim.Adam(model.parameters(), lr=learning_rate, fused=True)


@dataclass
class StepTiming:
    """Seconds spent per phase over a run of steps. `sample` is the sampler's own time
    (in a background thread, beside the step; on the CPU it includes gathering the
    batch's feature rows); `wait` is how long the step stood idle for it, the part of
    sampling the overlap did not hide."""

    steps: int = 0
    nodes: int = 0
    sample: float = 0.0
    wait: float = 0.0
    gather: float = 0.0
    forward: float = 0.0
    backward: float = 0.0
    optimiser: float = 0.0
    wall: float = 0.0
    sampled_nodes: int = 0
    sampled_edges: int = 0
    layer_rows: list = field(default_factory=list)  # per layer: [rows computed, input rows, edges], summed

    def summary(self) -> dict:
        per_step = self.wall / max(self.steps, 1)
        return {
            "steps": self.steps,
            "nodes_per_s": round(self.nodes / self.wall, 1) if self.wall else None,
            "step_s": round(per_step, 4),
            "sample_s": round(self.sample / max(self.steps, 1), 4),
            "sample_share": round(self.sample / self.wall, 3) if self.wall else None,
            "wait_s": round(self.wait / max(self.steps, 1), 4),
            "gather_s": round(self.gather / max(self.steps, 1), 4),
            "forward_s": round(self.forward / max(self.steps, 1), 4),
            "backward_s": round(self.backward / max(self.steps, 1), 4),
            "optimiser_s": round(self.optimiser / max(self.steps, 1), 4),
        }


@dataclass(frozen=True)
class _Prepared:
    targets: np.ndarray
    nodes: torch.Tensor
    adjacencies: list[MeanAdjacency]
    seconds: float
    inputs: torch.Tensor | None = None  # the nodes' feature rows, when gathered beside the step


def sampler_threads(device: torch.device) -> int:
    """Batches sampled at once, ahead of the step. On the CPU one: the step's products
    use every core, and a sampler beside them only fills the gaps. On a GPU the CPU is
    free, and sampling is what the step waits on."""
    if device.type == "cpu":
        return 1
    return max(1, min(8, len(os.sched_getaffinity(0)) // 2))


def _prepared_batches(sampler: NeighbourSampler, batches: list[np.ndarray], first_number: int, pin: bool,
                      threads: int = 1, training: bool = True,
                      features: torch.Tensor | None = None) -> Iterator[_Prepared]:
    """Sampled subgraphs as the model takes them, `threads` batches ahead in background
    threads (0: none, sampled in turn): numpy and torch's sparse constructors release the
    GIL, so sampling overlaps the step. Batch k is sampled with batch number
    first_number + k whichever thread takes it, so results do not depend on the overlap."""
    local = threading.local()

    def prepare(number: int) -> _Prepared:
        started = time.perf_counter()
        if not hasattr(local, "sampler"):  # a sampler's scratch arrays serve one thread
            local.sampler = NeighbourSampler(sampler.graph, sampler.fanouts, sampler.seed) if threads > 1 else sampler
        targets = batches[number]
        sub = local.sampler.sample(targets, batch_number=first_number + number)
        nodes = torch.from_numpy(sub.nodes)
        adjacencies = mean_adjacencies(sub, training)
        if pin:
            nodes, adjacencies = nodes.pin_memory(), [a.pin_memory() for a in adjacencies]
        # CPU features are gathered here too (hundreds of MB a step at 2.45M nodes), off the step's thread
        inputs = features.index_select(0, nodes) if features is not None else None
        return _Prepared(targets, nodes, adjacencies, time.perf_counter() - started, inputs)

    if threads < 1:
        yield from (prepare(number) for number in range(len(batches)))
        return
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sampler") as pool:
        pending = deque(pool.submit(prepare, number) for number in range(min(threads, len(batches))))
        for number in range(len(batches)):
            current = pending.popleft().result()
            if number + threads < len(batches):
                pending.append(pool.submit(prepare, number + threads))
            yield current


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_epoch(model: GraphSAGE, optimiser: torch.optim.Optimizer, sampler: NeighbourSampler, x: torch.Tensor,
                y: torch.Tensor, order: np.ndarray, batch_size: int, first_number: int, timing: StepTiming,
                on_batch: Callable[[int], None] | None = None, profile: bool = False,
                threads: int | None = None) -> tuple[float, int, int]:
    """One pass over `order` in batches: (summed loss, correct predictions, nodes seen).
    `x` and `y` live on the model's device; `profile` synchronises the device between
    phases so `timing` splits a step truly (slightly slower)."""
    device = x.device
    model.train()
    batches = list(_batches(order, batch_size))
    losses, corrects, seen = [], [], 0
    started = clock = time.perf_counter()
    threads = sampler_threads(device) if threads is None else threads
    on_cpu = device.type == "cpu"
    for prepared in _prepared_batches(sampler, batches, first_number, pin=not on_cpu, threads=threads,
                                      features=x if on_cpu else None):
        now = time.perf_counter()
        timing.wait += now - clock
        timing.sample += prepared.seconds
        clock = now

        def mark(phase: str) -> None:
            nonlocal clock
            if profile:
                _sync(device)
            now = time.perf_counter()
            setattr(timing, phase, getattr(timing, phase) + now - clock)
            clock = now

        targets = torch.from_numpy(prepared.targets).to(device, non_blocking=True)
        if on_cpu:
            inputs, adjacencies = prepared.inputs, prepared.adjacencies
        else:  # the features live on the GPU: gathered there
            inputs = x.index_select(0, prepared.nodes.to(device, non_blocking=True))
            adjacencies = [a.to(device, non_blocking=True) for a in prepared.adjacencies]
        mark("gather")
        optimiser.zero_grad()
        _, logits = model.forward_blocks(inputs, adjacencies)
        labels = y.index_select(0, targets)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        mark("forward")
        loss.backward()
        mark("backward")
        optimiser.step()
        # kept on the device: reading them back every step would wait for the GPU
        losses.append(loss.detach() * len(prepared.targets))
        corrects.append((logits.argmax(1) == labels).sum())
        mark("optimiser")
        seen += len(prepared.targets)
        timing.steps += 1
        timing.nodes += len(prepared.targets)
        for layer, a in enumerate(prepared.adjacencies):
            counts = [a.num_rows, a.matrix.shape[1], a.matrix.values().numel()]
            if len(timing.layer_rows) <= layer:
                timing.layer_rows.append([0, 0, 0])
            timing.layer_rows[layer] = [t + c for t, c in zip(timing.layer_rows[layer], counts)]
        if on_batch:
            on_batch(len(prepared.targets))
    total_loss = float(torch.stack(losses).sum()) if losses else 0.0
    correct = int(torch.stack(corrects).sum()) if corrects else 0
    timing.wall += time.perf_counter() - started
    return total_loss, correct, seen


def _batches(nodes: np.ndarray, size: int):
    for start in range(0, len(nodes), size):
        yield nodes[start : start + size]


@torch.no_grad()
def predict(model: GraphSAGE, graph: CSRGraph, features: np.ndarray | torch.Tensor, nodes: np.ndarray,
            fanouts: Sequence[int], batch_size: int = 1024, seed: int = 0) -> np.ndarray:
    """Predicted classes of `nodes` from sampled computation graphs (seeded: the same
    answer every call), on the device `features` lives on."""
    model.eval()
    sampler = NeighbourSampler(graph, fanouts, seed=seed)
    x = torch.from_numpy(features) if isinstance(features, np.ndarray) else features
    device = x.device
    predictions = []
    for prepared in _prepared_batches(sampler, list(_batches(nodes, batch_size)), 0, pin=device.type == "cuda",
                                      threads=sampler_threads(device), training=False):
        adjacencies = [a.to(device, non_blocking=True) for a in prepared.adjacencies] if device.type != "cpu" \
            else prepared.adjacencies
        _, logits = model.forward_blocks(x.index_select(0, prepared.nodes.to(device, non_blocking=True)), adjacencies)
        predictions.append(logits.argmax(1).cpu().numpy())
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

    device = training_device(config.device)
    model = GraphSAGE(data.features.shape[1], config.hidden, num_classes, config.num_layers, config.dropout).to(device)
    optimiser = adam(model, config.learning_rate)
    sampler = NeighbourSampler(graph, config.fanouts, seed=config.seed)
    x = torch.from_numpy(np.ascontiguousarray(data.features, np.float32)).to(device)
    y = torch.from_numpy(data.labels).to(device)
    rng = np.random.default_rng(config.seed)

    best = {"valid": -1.0, "epoch": 0}
    history = []
    timing = StepTiming()
    for epoch in range(1, config.epochs + 1):
        epoch_started = time.perf_counter()
        total_loss, correct, seen = train_epoch(model, optimiser, sampler, x, y, rng.permutation(splits["train"]),
                                                config.batch_size, epoch * 1_000_000, timing, on_batch)
        valid = predict(model, graph, x, splits["valid"], config.fanouts)
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
    _, logits = embed_layerwise(best_model, graph, data.features, device=device)
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
        "device": str(device),
        "timing": timing.summary(),
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
    from graphsvc.graph.ogb import load_ogb_node_dataset

    data = load_ogb_node_dataset(root, split)
    if data.splits is None and config.split_attribute:
        raise ConfigError("--split-attribute applies to the store; an OGB directory brings its split in split/")
    return train_on(data, out, config, on_epoch, on_batch, {"ogb_root": str(root), "ogb_split": split})


def step_flops(layer_rows: Sequence[Sequence[int]], dims: Sequence[int]) -> dict:
    """Dense arithmetic of one training step from per-layer [rows computed, input rows,
    edges]: each layer is two [rows, d_in] × [d_in, d_out] products forward (lin_l on
    the neighbour mean, lin_r on the node itself) and the same again for the weight
    gradients, and again for the input gradient except in the first layer (the features
    need none). `x3` is the usual forward × 3 rule, an upper bound."""
    forward = sparse = 0
    for (rows, _, edges), d_in, d_out in zip(layer_rows, dims[:-1], dims[1:]):
        forward += 2 * 2 * rows * d_in * d_out
        sparse += 2 * edges * d_in
    first = 2 * 2 * layer_rows[0][0] * dims[0] * dims[1] if layer_rows else 0
    return {"forward": forward, "train": 3 * forward - first, "x3": 3 * forward, "sparse_forward": sparse}


def train_throughput(graph: CSRGraph, features: np.ndarray, labels: np.ndarray, train_nodes: np.ndarray,
                     fanouts: Sequence[int] = (15, 10, 5), batch_size: int = 1024, steps: int = 10,
                     device: str | None = None, hidden: int = 256, seed: int = 0, threads: int | None = None,
                     profile: bool = True) -> dict:
    """Training nodes/s of the `jobs train-graphsage` step on a graph in memory, after one
    warm-up step: the per-phase split of a step (with `profile`, the device is synchronised
    between phases), the sampler's share, and the dense arithmetic per step (GFLOP, to set
    against the machine's matrix-multiply rate). Needs only torch, numpy and pyarrow."""
    device = training_device(device)
    torch.manual_seed(seed)
    num_classes = int(labels.max()) + 1
    dims = [features.shape[1]] + [hidden] * (len(fanouts) - 1) + [num_classes]
    model = GraphSAGE(features.shape[1], hidden, num_classes, len(fanouts)).to(device)
    optimiser = adam(model, 0.005)
    sampler = NeighbourSampler(graph, fanouts, seed=seed)
    x = torch.from_numpy(np.ascontiguousarray(features, np.float32)).to(device)
    y = torch.from_numpy(np.asarray(labels, np.int64)).to(device)
    train_nodes = np.asarray(train_nodes)
    batch_size = min(batch_size, len(train_nodes))
    needed = batch_size * (steps + 1)
    # full batches of one permutation after another (later epochs) until there are enough
    whole = len(train_nodes) // batch_size * batch_size
    order = np.concatenate([np.random.default_rng(seed + k).permutation(train_nodes)[:whole]
                            for k in range(-(-needed // whole))])
    train_epoch(model, optimiser, sampler, x, y, order[:batch_size], batch_size, 0, StepTiming(), threads=threads)
    timing = StepTiming()
    train_epoch(model, optimiser, sampler, x, y, order[batch_size:needed], batch_size, 1, timing,
                profile=profile, threads=threads)
    layers = [[round(v / timing.steps) for v in counts] for counts in timing.layer_rows]
    flops = step_flops(layers, dims)
    return {
        "device": str(device),
        "sampler_threads": sampler_threads(device) if threads is None else threads,
        "batch_size": batch_size,
        "fanouts": list(fanouts),
        "layers": [{"rows": r, "inputs": i, "edges": e} for r, i, e in layers],
        "flop_per_step": flops["train"],
        "flop_per_step_x3": flops["x3"],
        **timing.summary(),
    }
