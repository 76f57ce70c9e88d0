"""GraphSAGE on sampled computation graphs: one subgraph per batch of target nodes
(`graphsvc.graph.NeighbourSampler`), sent whole to the model (`graphsage` on Triton).
Batch b is journaled as `S-B{b}`."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from graphsvc.graph import CSRGraph, NeighbourSampler
from graphsvc.inference.batches import ModelInferMany, run_batches, split_rows
from graphsvc.models.graphsage import EMBEDDING, LOGITS, subgraph_request
from graphsvc.runs import RunJournal


def embed_sampled(graph: CSRGraph, features: np.ndarray, infer_many: ModelInferMany, model: str, *,
                  fanouts: Sequence[int], batch_size: int = 512, seed: int = 0, journal: RunJournal | None = None,
                  on_progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings [N, d], logits [N, classes]) for every node; `model` names the model
    in errors. The samples depend only on `seed` and the batch's number, so a rerun
    samples the batches it still needs as the first run did."""
    sampler = NeighbourSampler(graph, fanouts, seed=seed)
    batches = split_rows(np.arange(graph.num_nodes), batch_size)

    def outputs(requests):
        for result in infer_many(requests):
            yield {EMBEDDING: result[EMBEDDING], LOGITS: result[LOGITS]}

    results = run_batches(
        model, [f"S-B{b}" for b in range(len(batches))], [len(targets) for targets in batches],
        lambda b: subgraph_request(features, sampler.sample(batches[b], batch_number=b)), outputs,
        journal=journal, on_progress=on_progress)
    return (np.concatenate([result[EMBEDDING] for result in results]),
            np.concatenate([result[LOGITS] for result in results]))
