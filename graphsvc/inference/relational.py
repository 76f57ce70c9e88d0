"""Layer-wise inference of the graph-aware movie model (`graphsvc.models.movie_graph`):
the same driver as GraphSAGE's (`layerwise.layer_partition`, journaled `L{l}-B{b}`, the
same runners' protocol: in this process or the per-layer models on Triton), with the
relations' means (`graphsvc.graph.relations`) where GraphSAGE has one neighbour mean."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import numpy as np
import torch

from graphsvc.errors import ModelRepositoryError
from graphsvc.graph.relations import MovieRelations
from graphsvc.inference.batches import batch_ranges, split_rows
from graphsvc.inference.layerwise import layer_partition, partition
from graphsvc.inference.runners import WHOLE_GRAPH_SHARE, Batch, HostArrays, LayerRunner, layer_models
from graphsvc.models.graphsage import layer_model_name
from graphsvc.models.movie_graph import MovieGraphModel
from graphsvc.runs import RunJournal

if TYPE_CHECKING:
    from graphsvc.triton.client import TritonClient


class TorchMovieLayers:
    """The model's layers in this process (CPU): evaluation, baselines, tests."""

    def __init__(self, model: MovieGraphModel, name: str = "movie_graph"):
        self.arrays = HostArrays()
        self._layers = list(model.eval().layers)
        self._name = name

    @property
    def num_layers(self) -> int:
        return len(self._layers)

    def model(self, layer: int) -> str:
        return layer_model_name(self._name, layer)

    def apply_many(self, layer: int, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> Iterator[np.ndarray]:
        for rows, neighbours in batches:
            with torch.inference_mode():
                yield self._layers[layer](torch.from_numpy(rows), torch.from_numpy(neighbours)).numpy()


def apply_movie_layer(runner: LayerRunner, layer: int, relations: MovieRelations, inputs: np.ndarray,
                      rows: np.ndarray | None = None, *, batch_size: int = 16_384, partitions: int = 1,
                      journal: RunJournal | None = None,
                      on_progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Layer `layer`'s output for `rows` (default: every movie, in order) given its input
    for every movie. The relation means come from one product per relation over all
    movies when `rows` are most of them, else per batch from those rows' own entries."""
    count = relations.num_movies if rows is None else len(rows)
    batches = batch_ranges(count, batch_size) if rows is None else split_rows(np.asarray(rows, np.int64), batch_size)
    if not batches:
        return np.zeros((0, 0), np.float32)
    if count > WHOLE_GRAPH_SHARE * relations.num_movies:
        whole = functools.cache(lambda: relations.neighbour_means(None, inputs))
        neighbours: Callable[[Batch], np.ndarray] = lambda batch: whole()[batch]  # noqa: E731
    else:
        neighbours = lambda batch: relations.neighbour_means(_numbers(batch), inputs)  # noqa: E731
    parts = [layer_partition(runner, layer, inputs, batches, numbers, neighbours, journal=journal,
                             on_progress=on_progress)
             for numbers in partition(len(batches), partitions)]
    return np.concatenate([out for part in parts for out in part])


def run_movie_layers(runner: LayerRunner, relations: MovieRelations, vectors: np.ndarray, *,
                     batch_size: int = 16_384, journal: RunJournal | None = None,
                     on_progress: Callable[[int], None] | None = None) -> list[np.ndarray]:
    """Every layer's output for every movie, in layer order (the last is the embedding)."""
    outputs, rows = [], np.ascontiguousarray(vectors, np.float32)
    for layer in range(runner.num_layers):
        rows = apply_movie_layer(runner, layer, relations, rows, batch_size=batch_size, journal=journal,
                                 on_progress=on_progress)
        outputs.append(rows)
    return outputs


def embed_movies_in_process(model: MovieGraphModel, relations: MovieRelations, vectors: np.ndarray) -> np.ndarray:
    """The graph-aware embedding of every movie, in this process."""
    return run_movie_layers(TorchMovieLayers(model), relations, vectors)[-1]


#: the layer models' config parameter naming the relations, in the order of their neighbour blocks
RELATIONS_PARAMETER = "relations"


def served_movie_model(triton: TritonClient, model: str) -> tuple[list[str], tuple[str, ...]] | None:
    """(its layer models, its relations) of the graph-aware movie model `model` as Triton
    serves it (the relations are layer 0's config parameter), or None when it serves no
    `<model>_layer0`."""
    served = {status.name for status in triton.models()}
    if layer_model_name(model, 0) not in served:
        return None
    models = layer_models(triton, model)
    parameters = triton.model_config(models[0]).parameters
    if RELATIONS_PARAMETER not in parameters:
        raise ModelRepositoryError(f"'{models[0]}' names no relations in its config parameters — "
                                   "export it again with 'jobs export-models'")
    return models, tuple(r for r in parameters[RELATIONS_PARAMETER].string_value.split(",") if r)


def _numbers(batch: Batch) -> np.ndarray:
    return np.arange(batch.start, batch.stop) if isinstance(batch, slice) else batch
