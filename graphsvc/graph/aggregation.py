"""Neighbour means over a whole graph: the aggregation step of layer-wise GraphSAGE."""

from __future__ import annotations

import numpy as np

from graphsvc.graph.csr import CSRGraph


class NeighbourMean:
    """The mean of each node's neighbours' rows, for the whole graph at once: one sparse
    product per GraphSAGE layer in layer-wise inference (full neighbourhoods, no sampling)."""

    def __init__(self, graph: CSRGraph):
        import warnings

        import torch

        self._torch = torch
        degrees = np.maximum(graph.degree(), 1).astype(np.float32)
        with torch.sparse.check_sparse_tensor_invariants(enable=False), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            self._adjacency = torch.sparse_csr_tensor(
                torch.from_numpy(graph.indptr),
                torch.from_numpy(graph.indices),
                torch.from_numpy(np.repeat(1.0 / degrees, graph.degree()).astype(np.float32)),
                size=(graph.num_nodes, graph.num_nodes),
            )

    @property
    def adjacency(self):
        """The [N, N] torch sparse CSR matrix of 1/degree weights (to move to a GPU)."""
        return self._adjacency

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            return sparse_times(self._adjacency, self._torch.from_numpy(np.ascontiguousarray(rows, np.float32))).numpy()


def neighbour_mean_rows(graph: CSRGraph, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The mean of the neighbours' `values` for `rows` only (zeros for isolated rows),
    the same numbers `graphsvc.graph.NeighbourMean` gives for them: one sparse product
    over those rows' slice of the adjacency, so it costs in proportion to their edges."""
    import warnings

    import torch

    rows = np.asarray(rows, np.int64)
    if len(rows) == 0:
        return np.zeros((0, values.shape[1]), np.float32)
    indptr, neighbours = graph.rows(rows)
    degrees = np.diff(indptr)
    weights = np.repeat((1.0 / np.maximum(degrees, 1)).astype(np.float32), degrees)
    with torch.sparse.check_sparse_tensor_invariants(enable=False), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        matrix = torch.sparse_csr_tensor(torch.from_numpy(indptr), torch.from_numpy(neighbours),
                                         torch.from_numpy(weights), size=(len(rows), len(values)))
        with torch.inference_mode():
            return (matrix @ torch.from_numpy(np.ascontiguousarray(values, np.float32))).numpy()


def sparse_times(matrix, dense):
    """matrix (sparse CSR) @ dense. On CPU into an uninitialised result with beta=0: the
    plain product zero-fills a result and copies it once more, which took 3–5× the time of
    the product itself."""
    import torch

    if matrix.device.type != "cpu":
        return matrix @ dense
    out = torch.empty((matrix.shape[0], dense.shape[1]), dtype=dense.dtype)
    return torch.addmm(out, matrix, dense, beta=0, out=out)
