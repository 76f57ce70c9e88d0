"""Layer-wise, full-neighbourhood GraphSAGE inference in this process: the same
computation `jobs embed-products` has Triton do, for evaluation and training metrics
on a graph of our choosing (e.g. one without the held-out edges)."""

from __future__ import annotations

import numpy as np
import torch

from graphsvc.graph import CSRGraph, NeighbourMean
from graphsvc.models.graphsage import GraphSAGE, layer_steps


@torch.inference_mode()
def embed_layerwise(model: GraphSAGE, graph: CSRGraph, features: np.ndarray,
                    batch_size: int = 65_536) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings = last hidden layer [N, hidden], logits [N, classes]) for every node."""
    model.eval()
    mean = NeighbourMean(graph)
    steps = layer_steps(model)
    rows, embedding = np.ascontiguousarray(features, np.float32), None
    for layer, step in enumerate(steps):
        neighbours = mean(rows)
        out = np.empty((len(rows), step.lin_l.out_features), np.float32)
        for start in range(0, len(rows), batch_size):
            chunk = slice(start, start + batch_size)
            out[chunk] = step(torch.from_numpy(rows[chunk]), torch.from_numpy(neighbours[chunk])).numpy()
        if layer == len(steps) - 2:
            embedding = out
        rows = out
    return (embedding if embedding is not None else rows), rows
