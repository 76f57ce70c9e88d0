"""Layer-wise, full-neighbourhood GraphSAGE inference in this process: the same
computation `jobs embed-products` has Triton do, for evaluation and training metrics
on a graph of our choosing (e.g. one without the held-out edges). Runs on CUDA when
torch finds it (or where `device` says)."""

from __future__ import annotations

import copy
import os

import numpy as np
import torch

from graphsvc.graph import CSRGraph, NeighbourMean
from graphsvc.models.graphsage import GraphSAGE, layer_steps


def inference_device(requested: str | torch.device | None = None) -> torch.device:
    """`requested`, else GRAPHSVC_DEVICE, else CUDA when torch finds it, else the CPU."""
    if requested is not None:
        return torch.device(requested)
    return torch.device(os.environ.get("GRAPHSVC_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu"))


@torch.inference_mode()
def embed_layerwise(model: GraphSAGE, graph: CSRGraph, features: np.ndarray, batch_size: int = 65_536,
                    device: str | torch.device | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings = last hidden layer [N, hidden], logits [N, classes]) for every node."""
    device = inference_device(device)
    if device.type != "cpu":
        return _embed_layerwise_on(model, graph, features, device)
    model.eval()
    mean = NeighbourMean(graph)
    steps = layer_steps(model)
    rows, embedding = np.ascontiguousarray(features, np.float32), None
    for layer, step in enumerate(steps):
        neighbours = mean(rows)
        out = np.empty((len(rows), step.lin_l.out_channels), np.float32)
        for start in range(0, len(rows), batch_size):
            chunk = slice(start, start + batch_size)
            out[chunk] = step(torch.from_numpy(rows[chunk]), torch.from_numpy(neighbours[chunk])).numpy()
        if layer == len(steps) - 2:
            embedding = out
        rows = out
    return (embedding if embedding is not None else rows), rows


def _embed_layerwise_on(model: GraphSAGE, graph: CSRGraph, features: np.ndarray,
                        device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """The same layers with every layer's rows kept on the device (2.45M × 256 floats is
    2.5 GB: small beside a GPU's memory); only the results come back."""
    # a copy: the caller's model stays where it was
    steps = layer_steps(copy.deepcopy(model).eval().to(device))
    adjacency = NeighbourMean(graph).adjacency.to(device)
    rows, embedding = torch.from_numpy(np.ascontiguousarray(features, np.float32)).to(device), None
    for layer, step in enumerate(steps):
        rows = step(rows, adjacency @ rows)
        if layer == len(steps) - 2:
            embedding = rows.cpu().numpy()
    logits = rows.cpu().numpy()
    return (embedding if embedding is not None else logits), logits
