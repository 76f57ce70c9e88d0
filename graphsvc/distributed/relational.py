"""The graph-aware movie model's layers on Ray: the same partitions, routes, actors and
journal as GraphSAGE's (`layerwise.run_layers_on_ray`), over the movies.

A movie's neighbour input is its relation means (`graphsvc.graph.relations`: per relation,
the mean of each of its people's other movies), a fixed weighted movie × movie CSR per
relation. So the partitions are ranges of the movies in the order of those matrices'
union graph (`partitions.partition_relations`), a partition's halo is every movie its
rows' means read, and the actor computes its rows' relation means from its own and halo
rows before it calls the layer on Triton (inputs `self__0` [n, d] and `neighbours__1`
[n, R·d], as the local runner sends them). The result equals the local run
(`graphsvc.inference.relational.run_movie_layers`) to float rounding: the same weights
summed in the same row, only the columns renumbered.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from graphsvc.distributed.layerwise import RayLayerwiseResult, run_layers_on_ray
from graphsvc.distributed.partitions import partition_relations
from graphsvc.graph.relations import MovieRelations
from graphsvc.runs import RunJournal


def embed_movie_layers_on_ray(relations: MovieRelations, vectors: np.ndarray, triton_url: str,
                              models: Sequence[str], *, partitions: int, actors: int = 2,
                              batch_size: int = 16_384, max_in_flight: int = 2, order: str = "bfs",
                              broadcast: bool | None = None, journal: RunJournal | None = None,
                              on_progress: Callable[[int], None] | None = None) -> RayLayerwiseResult:
    """Every movie's graph-aware embedding (the result's `last_layer`) from its text
    vectors, the layers (`models`, Triton's `<model>_layerN`) applied on a Ray cluster
    already joined, in `partitions` partitions of the movies journaled as `L{l}-P{p}`.
    `broadcast` as `layerwise.embed_layerwise_on_ray` takes it."""
    plan = partition_relations(relations, partitions, order)
    return run_layers_on_ray(plan, relations.num_movies, vectors, triton_url, models, actors=actors,
                             batch_size=batch_size, max_in_flight=max_in_flight, broadcast=broadcast,
                             journal=journal, on_progress=on_progress)
