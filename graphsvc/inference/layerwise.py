"""Layer-wise, full-neighbourhood GraphSAGE inference over a CSR graph: each layer's
input for every node is computed once (no overlapping sampled subgraphs), the neighbour
means are sparse products, and a runner (`runners`: torch in this process, or Triton)
applies the layer's weights in large batches.

A layer's rows split into partitions that need nothing from each other but the layer's
input: `layer_partition` computes one, `apply_layer` runs a layer's partitions and joins
them (the barrier before the next layer), `run_layers` drives every layer over all nodes.
Batch b of layer l is journaled as `L{l}-B{b}`, whatever the partitioning.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import numpy as np
import torch

from graphsvc.graph import CSRGraph, NeighbourMean
from graphsvc.inference.batches import batch_ranges, run_batches, split_rows
from graphsvc.inference.runners import Batch, LayerRunner, Rows, TorchLayers
from graphsvc.models.graphsage import GraphSAGE
from graphsvc.runs import RunJournal


def run_layers(runner: LayerRunner, graph: CSRGraph, features: np.ndarray, *, batch_size: int = 65_536,
               partitions: int = 1, journal: RunJournal | None = None,
               on_progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(embedding = the last hidden layer's output [N, hidden], logits [N, classes]) for
    every node; `on_progress` gets each finished batch's row count (every layer's)."""
    mean = functools.cache(lambda: NeighbourMean(graph))
    rows, embedding = runner.arrays.put(features), None
    for layer in range(runner.num_layers):
        rows = apply_layer(runner, layer, graph, rows, batch_size=batch_size, partitions=partitions,
                           journal=journal, on_progress=on_progress, mean=mean)
        if layer == runner.num_layers - 2:
            embedding = runner.arrays.host(rows)
    logits = runner.arrays.host(rows)
    return (embedding if embedding is not None else logits), logits


def apply_layer(runner: LayerRunner, layer: int, graph: CSRGraph, inputs: Rows, rows: np.ndarray | None = None, *,
                batch_size: int = 65_536, partitions: int = 1, journal: RunJournal | None = None,
                on_progress: Callable[[int], None] | None = None,
                mean: Callable[[], NeighbourMean] | None = None) -> Rows:
    """Layer `layer`'s output for `rows` (default: every node, in order), given the
    layer's input for every node (`inputs`, where `runner.arrays` keeps rows). Neighbour
    means come from one product over the whole graph when `rows` are most of it, else
    per batch from the batch's own edges; `mean` gives a NeighbourMean already made.
    Without rows the result has no columns either."""
    if rows is None:
        batches: Sequence[Batch] = batch_ranges(graph.num_nodes, batch_size)
        count = graph.num_nodes
    else:
        batches, count = split_rows(np.asarray(rows, np.int64), batch_size), len(rows)
    if not batches:
        return runner.arrays.put(np.zeros((0, 0), np.float32))
    neighbours = runner.arrays.neighbour_means(graph, mean or (lambda: NeighbourMean(graph)), inputs, count)
    parts = [layer_partition(runner, layer, inputs, batches, numbers, neighbours, journal=journal,
                             on_progress=on_progress)
             for numbers in partition(len(batches), partitions)]
    return runner.arrays.join([out for part in parts for out in part])


def layer_partition(runner: LayerRunner, layer: int, inputs: Rows, batches: Sequence[Batch], numbers: range,
                    neighbours: Callable[[Batch], Rows], *, journal: RunJournal | None = None,
                    on_progress: Callable[[int], None] | None = None) -> list[Rows]:
    """Layer `layer` for one partition of its rows: the batches numbered `numbers`,
    each one's output in order."""
    arrays = runner.arrays

    def request(i: int) -> tuple[Rows, Rows]:
        batch = batches[numbers[i]]
        return inputs[batch], neighbours(batch)

    def infer_many(requests):
        outputs = runner.apply_many(layer, requests)
        return map(arrays.host, outputs) if journal is not None else outputs  # a journal holds host arrays

    results = run_batches(runner.model(layer), [f"L{layer}-B{b}" for b in numbers],
                          [_size(batches[b]) for b in numbers], request, infer_many, journal=journal,
                          on_progress=on_progress)
    return [arrays.put(result) for result in results]


def partition(count: int, parts: int) -> list[range]:
    """`count` batches in at most `parts` consecutive, near-equal, non-empty ranges."""
    bounds = [count * p // parts for p in range(parts + 1)]
    return [range(start, stop) for start, stop in zip(bounds, bounds[1:]) if stop > start]


def embed_layerwise(model: GraphSAGE, graph: CSRGraph, features: np.ndarray, batch_size: int = 65_536,
                    device: str | torch.device | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings = last hidden layer [N, hidden], logits [N, classes]) for every node,
    in this process: evaluation and training metrics on a graph of our choosing (e.g.
    one without the held-out edges). On CUDA when torch finds it (or where `device` says)."""
    return run_layers(TorchLayers(model, device), graph, features, batch_size=batch_size)


def _size(batch: Batch) -> int:
    return batch.stop - batch.start if isinstance(batch, slice) else len(batch)
