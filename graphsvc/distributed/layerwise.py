"""Layer-wise GraphSAGE on Ray: the nodes in partitions, a layer at a time.

Per layer, partition p needs its own rows' inputs and its halo's (`partitions`). Either
every partition's output of the layer before is routed to the partitions that need it —
a map/reduce shuffle through the object store: the task computing partition p's layer
returns its own rows and, for each other partition q, the rows of q's halo it owns, as
separate objects, and q's next task takes its own block and those pieces — or, when a
whole layer fits one node's object store (`BROADCAST_SHARE` of the smallest node's), the
layer is put once and every partition reads it (a broadcast). Each partition's neighbour
means are computed where it runs (`Partition.neighbour_means`: GraphSAGE's one mean, or the
graph-aware movie model's relation means, `graphsvc.distributed.relational`), and its rows go through
Triton from an actor (one TritonClient each; the actors bound the concurrent Triton work
and each runs one partition at a time); then the layer's barrier.

`apply_layer_on_ray` is the same for a subset of the nodes (an incremental re-index's
rows to recompute in one layer, `jobs.reindex`): the rows in partitions
(`partitions.partition_rows`), each partition's own and halo rows routed to it from the
layer's input the driver holds (or that input broadcast, when it fits and routing would
move as much), the same actors (`LayerPool`) and worker code, the outputs gathered in
the order of the rows; its partitions are journaled under a prefix of the caller's.

Partition p of layer l is journaled as `L{l}-P{p}` by the worker that computed it (the
journal's directory is on storage every worker sees): a rerun of a killed job loads
finished partitions instead of computing them, and skips a layer outright when the
layer after it is complete. A worker killed mid-partition is restarted by Ray and the
partition retried (`max_restarts`, `max_task_retries`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from graphsvc.distributed.cluster import (
    BROADCAST_SHARE,
    import_ray,
    smallest_object_store,
    worker_kill_point,
    worker_runtime_env,
)
from graphsvc.distributed.partitions import Partition, Partitioning, partition_graph, partition_rows
from graphsvc.graph.csr import CSRGraph
from graphsvc.runs import RunJournal, kill_point

#: times Ray restarts an actor that died, and retries the partition it was computing
WORKER_RETRIES = 3


@dataclass
class LayerTraffic:
    layer: int
    route: str  # "broadcast" (the layer's input put once, read by every partition) or "shuffle" (halo rows only)
    bytes_moved: int  # input bytes that left the partition that computed them (broadcast: the layer's size once)
    seconds: float
    reused: int  # partitions loaded from the journal

    def to_dict(self) -> dict:
        return {"layer": self.layer, "route": self.route, "bytes_moved": self.bytes_moved,
                "seconds": round(self.seconds, 3), "reused": self.reused}


@dataclass
class RayLayerwiseResult:
    embeddings: np.ndarray  # [N, hidden]: the last hidden layer
    logits: np.ndarray  # [N, classes]
    partitioning: Partitioning
    layers: list[LayerTraffic] = field(default_factory=list)
    computed: int = 0  # partitions computed by this run
    reused: int = 0  # partitions loaded from the journal
    embedding_blocks: list = field(default_factory=list)  # per partition, object refs (for the write-back)
    logit_blocks: list = field(default_factory=list)
    workers: list = field(default_factory=list)  # the actors, when kept for the write-back (`release`)

    def release(self) -> None:
        """End the actors kept for the write-back."""
        ray = import_ray()
        for actor in self.workers:
            ray.kill(actor)
        self.workers = []

    @property
    def last_layer(self) -> np.ndarray:
        """The last layer's output for every node (GraphSAGE's logits; the movie model's embedding)."""
        return self.logits

    def summary(self, num_nodes: int) -> dict:
        return {**self.partitioning.summary(num_nodes), "layers": [layer.to_dict() for layer in self.layers]}


class LayerWorker:
    """A Ray actor: one Triton client, a layer of one partition at a time."""

    def __init__(self, triton_url: str, models: Sequence[str], max_in_flight: int, batch_size: int,
                 journal_dir: str | None):
        from graphsvc.inference.runners import TritonLayers
        from graphsvc.triton.client import TritonClient

        self._triton = TritonClient(triton_url)
        self._runner = TritonLayers(self._triton, models, max_in_flight)
        self._batch_size = batch_size
        self._journal = RunJournal(Path(journal_dir)) if journal_dir else None

    def apply(self, name: str, layer: int, plan: Partition, whole: bool, inputs, *pieces):
        """(own rows' output, rows for each partition q's halo (empty for q = p), stats),
        journaled as `name`. `inputs`: the layer's input for every node (`whole`), else
        this partition's own rows, with `pieces` its halo's rows from each owner in turn;
        None when the journal has the result."""
        output = self._journal.load(name) if self._journal else None
        if output is not None and len(output) != len(plan.owned):  # not this partition's: computed again
            output = None
        reused = output is not None
        if output is None and inputs is None:  # the driver counted on the journal, whose file was unreadable
            raise RuntimeError(f"the journal's {name} could not be read (and is removed): rerun the job")
        if output is None:
            # the marker outlives the journal (removed when the job ends): the tests look for it
            worker_kill_point(name, self._journal.directory.parent if self._journal else None)
            output = self._compute(layer, plan, inputs if whole else None,
                                   None if whole else np.concatenate([inputs, *pieces]) if pieces else inputs)
            if self._journal:
                self._journal.save(name, output)
        sends = [output[rows] for rows in plan.sends]
        stats = {"partition": plan.number, "rows": len(output), "width": int(output.shape[1]), "reused": reused,
                 "sent_bytes": int(sum(piece.nbytes for piece in sends))}
        return (output, *sends, stats)

    def _compute(self, layer: int, plan: Partition, whole: np.ndarray | None, local: np.ndarray | None) -> np.ndarray:
        from graphsvc.inference.batches import batch_ranges
        from graphsvc.inference.layerwise import layer_partition

        if local is None:
            local = whole[plan.nodes]
        owned = len(plan.owned)
        means = plan.neighbour_means(local)  # GraphSAGE's one mean, or the movie model's relation means
        own_rows = np.ascontiguousarray(local[:owned], np.float32)
        batches = batch_ranges(owned, self._batch_size)
        parts = layer_partition(self._runner, layer, own_rows, batches, range(len(batches)),
                                lambda batch: means[batch])
        return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)

    def write_shard(self, *args) -> str:
        """A Parquet shard of the write-back (`graphsvc.distributed.publish`), written by
        a worker already started."""
        from graphsvc.distributed.publish import write_shard

        return write_shard(*args)


class LayerPool:
    """The actors that apply layers (`LayerWorker`, one Triton client each), started once
    for a job and used layer after layer; partition p runs on actor p mod their count."""

    def __init__(self, triton_url: str, models: Sequence[str], *, actors: int, batch_size: int,
                 max_in_flight: int, journal: RunJournal | None):
        ray = import_ray()
        worker = ray.remote(LayerWorker).options(num_cpus=1, max_restarts=WORKER_RETRIES,
                                                 max_task_retries=WORKER_RETRIES,
                                                 runtime_env=worker_runtime_env())
        self.actors = [worker.remote(triton_url, list(models), max_in_flight, batch_size,
                                     str(journal.directory) if journal else None) for _ in range(max(1, actors))]

    def submit(self, names: Sequence[str], layer: int, parts: Sequence[Partition], plan_refs: Sequence,
               args: Sequence[tuple]) -> list[list]:
        """Per partition, the object refs of (own output, its sends…, stats); `args` per
        partition (whole, inputs, pieces) as `LayerWorker.apply` takes them."""
        return [self.actors[p.number % len(self.actors)].apply.options(num_returns=len(p.sends) + 2).remote(
            name, layer, plan_ref, whole, inputs, *pieces)
            for name, p, plan_ref, (whole, inputs, pieces) in zip(names, parts, plan_refs, args)]

    def release(self) -> None:
        ray = import_ray()
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []


def embed_layerwise_on_ray(graph: CSRGraph, features: np.ndarray, triton_url: str, models: Sequence[str], *,
                           partitions: int, actors: int = 2, batch_size: int = 16_384, max_in_flight: int = 2,
                           order: str = "bfs", broadcast: bool | None = None, journal: RunJournal | None = None,
                           on_progress: Callable[[int], None] | None = None,
                           keep_workers: bool = False) -> RayLayerwiseResult:
    """Every node's last hidden layer and logits, the layers (`models`, Triton's
    `<model>_layerN`) applied on a Ray cluster already joined (`cluster.ray_session`).

    `broadcast`: True/False forces how each layer's input reaches the partitions; None
    broadcasts a layer when its bytes fit BROADCAST_SHARE of the smallest node's object
    store, else shuffles halo rows. `on_progress` gets each finished partition's rows
    (a node's share split among the layers, as the local runner reports). With
    `keep_workers` the actors outlive the call (the result's `workers`, to write the
    shards of the write-back): the caller ends them with `release()`."""
    return run_layers_on_ray(partition_graph(graph, partitions, order), graph.num_nodes, features, triton_url,
                             models, actors=actors, batch_size=batch_size, max_in_flight=max_in_flight,
                             broadcast=broadcast, journal=journal, on_progress=on_progress, keep_workers=keep_workers)


def run_layers_on_ray(plan: Partitioning, num_nodes: int, features: np.ndarray, triton_url: str,
                      models: Sequence[str], *, actors: int = 2, batch_size: int = 16_384, max_in_flight: int = 2,
                      broadcast: bool | None = None, journal: RunJournal | None = None,
                      on_progress: Callable[[int], None] | None = None,
                      keep_workers: bool = False) -> RayLayerwiseResult:
    """`embed_layerwise_on_ray` for any partitioning whose partitions say how their
    neighbour input is computed (`Partition.neighbour_means`): GraphSAGE's
    (`partition_graph`) or the graph-aware movie model's (`partition_relations`)."""
    ray = import_ray()
    parts = plan.parts
    num_layers = len(models)
    limit = BROADCAST_SHARE * smallest_object_store(ray)
    pool = LayerPool(triton_url, models, actors=min(actors, len(parts)), batch_size=batch_size,
                     max_in_flight=max_in_flight, journal=journal)
    result = RayLayerwiseResult(np.zeros(0), np.zeros(0), plan, workers=pool.actors)
    try:
        plan_refs = [ray.put(part) for part in parts]
        complete = [journal is not None and all(journal.has(f"L{layer}-P{p.number}") for p in parts)
                    for layer in range(num_layers)]
        outputs: list[list] | None = None  # per partition: [own, sends to each q…, stats]
        width = features.shape[1]
        for layer in range(num_layers):
            started = time.perf_counter()
            # a complete layer whose successor is complete too is not needed (but the last two are returned)
            if layer < num_layers - 2 and complete[layer + 1]:
                result.layers.append(LayerTraffic(layer, "skipped (journaled)", 0, 0.0, len(parts)))
                result.reused += len(parts)
                outputs = None
                continue
            layer_bytes = num_nodes * width * 4
            whole = broadcast if broadcast is not None else layer_bytes <= limit
            if outputs is None and complete[layer]:
                args = [(True, None, ()) for _ in parts]  # the journal has every partition of it
                route, moved = "journal", 0
            elif outputs is None:  # the layer's input is the features, here
                if whole:
                    shared = ray.put(np.ascontiguousarray(features, np.float32))
                    args = [(True, shared, ()) for _ in parts]
                else:
                    args = [(False, ray.put(np.ascontiguousarray(features[p.owned], np.float32)),
                             (ray.put(np.ascontiguousarray(features[p.halo], np.float32)),)) for p in parts]
                route, moved = ("broadcast", layer_bytes) if whole else \
                    ("shuffle", int(sum(len(p.halo) for p in parts)) * width * 4)
            elif whole:
                shared = ray.put(_gather(ray, parts, [out[0] for out in outputs]))
                args = [(True, shared, ()) for _ in parts]
                route, moved = "broadcast", layer_bytes
            else:
                args = [(False, outputs[q.number][0],
                         tuple(outputs[p.number][1 + q.number] for p in parts if p.number != q.number)) for q in parts]
                route, moved = "shuffle", int(sum(len(p.halo) for p in parts)) * width * 4
            outputs = pool.submit([f"L{layer}-P{p.number}" for p in parts], layer, parts, plan_refs, args)
            reused = _barrier(ray, [out[-1] for out in outputs], result, num_layers, on_progress)
            width = ray.get(outputs[0][-1])["width"]
            result.layers.append(LayerTraffic(layer, route, moved, time.perf_counter() - started, reused))
            if layer == num_layers - 2:
                result.embedding_blocks = [out[0] for out in outputs]
            if layer == num_layers - 1:
                result.logit_blocks = [out[0] for out in outputs]
        result.logits = _gather(ray, parts, result.logit_blocks)
        result.embeddings = (_gather(ray, parts, result.embedding_blocks) if result.embedding_blocks
                             else result.logits)
        if not result.embedding_blocks:
            result.embedding_blocks = result.logit_blocks
    except BaseException:
        result.release()
        raise
    if not keep_workers:
        result.release()
    return result


def _barrier(ray, stats_refs: list, result, num_layers: int, on_progress: Callable[[int], None] | None) -> int:
    """Wait for every partition of the layer, in the order they finish, counting them in
    `result` (its `computed`, `reused`); the driver's kill point `embed` counts partitions
    computed by this run. Returns those reused."""
    pending, reused = list(stats_refs), 0
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        stats = ray.get(done[0])
        if stats["reused"]:
            result.reused += 1
            reused += 1
        else:
            result.computed += 1
            kill_point("embed", result.computed)
        if on_progress:
            on_progress(stats["rows"] / num_layers)
    return reused


def _gather(ray, parts: Sequence[Partition], blocks: list) -> np.ndarray:
    """The partitions' blocks as one array in node order."""
    arrays = ray.get(blocks)
    width = arrays[0].shape[1] if arrays else 0
    out = np.empty((sum(len(p.owned) for p in parts), width), np.float32)
    for part, array in zip(parts, arrays):
        out[part.owned] = array
    return out


@dataclass
class SubsetTally:
    """What `apply_layer_on_ray` did over a job: partitions computed and reused, per layer call."""

    computed: int = 0
    reused: int = 0
    layers: list[LayerTraffic] = field(default_factory=list)


def apply_layer_on_ray(pool: LayerPool, layer: int, graph: CSRGraph, inputs: np.ndarray, rows: np.ndarray, *,
                       partitions: int, order: str = "bfs", ranked: np.ndarray | None = None,
                       broadcast: bool | None = None, journal: RunJournal | None = None, prefix: str = "RL",
                       tally: SubsetTally | None = None,
                       on_progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Layer `layer`'s output for `rows` (distinct nodes), in the order of `rows`, given
    the layer's input for every node (`inputs`, here on the driver), computed by the
    pool's actors in up to `partitions` partitions of the rows (`partition_rows` in
    `order`; `ranked`: that order, already computed). Partition p is journaled as
    `{prefix}{layer}-P{p}`: one found in `journal` is loaded, not computed. `broadcast`:
    True/False forces how the input reaches the partitions; None puts the whole input
    once when it fits BROADCAST_SHARE of the smallest node's object store and routing
    each partition its own and halo rows would move at least as many bytes."""
    ray = import_ray()
    tally = tally if tally is not None else SubsetTally()
    started = time.perf_counter()
    rows = np.asarray(rows, np.int64)
    parts = partition_rows(graph, rows, partitions, order, ranked).parts
    names = [f"{prefix}{layer}-P{p.number}" for p in parts]
    blocks: list = [None] * len(parts)
    if journal is not None:
        for i, (name, part) in enumerate(zip(names, parts)):
            found = journal.load(name) if journal.has(name) else None
            if found is not None and len(found) == len(part.owned):
                blocks[i] = found
    todo = [i for i, block in enumerate(blocks) if block is None]
    width = inputs.shape[1]
    layer_bytes = graph.num_nodes * width * 4
    routed_bytes = int(sum(len(parts[i].owned) + len(parts[i].halo) for i in todo)) * width * 4
    whole = broadcast if broadcast is not None else (
        layer_bytes <= BROADCAST_SHARE * smallest_object_store(ray) and routed_bytes >= layer_bytes)
    route, moved = ("broadcast", layer_bytes) if whole else ("route", routed_bytes)
    if todo:
        if whole:
            shared = ray.put(np.ascontiguousarray(inputs, np.float32))
            args = [(True, shared, ()) for _ in todo]
        else:
            args = [(False, ray.put(np.ascontiguousarray(inputs[parts[i].owned], np.float32)),
                     (ray.put(np.ascontiguousarray(inputs[parts[i].halo], np.float32)),)) for i in todo]
        outputs = pool.submit([names[i] for i in todo], layer, [parts[i] for i in todo],
                              [ray.put(parts[i]) for i in todo], args)
        _barrier(ray, [out[-1] for out in outputs], tally, 1, on_progress)
        for i, block in zip(todo, ray.get([out[0] for out in outputs])):
            blocks[i] = block
    else:
        route, moved = "journal", 0
    tally.reused += len(parts) - len(todo)
    out_width = blocks[0].shape[1] if blocks else 0
    out = np.empty((len(rows), out_width), np.float32)
    position = np.full(graph.num_nodes, -1, np.int64)
    position[rows] = np.arange(len(rows))
    for part, block in zip(parts, blocks):
        out[position[part.owned]] = block
    tally.layers.append(LayerTraffic(layer, route, moved, time.perf_counter() - started, len(parts) - len(todo)))
    return out
