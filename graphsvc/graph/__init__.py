"""The graph as arrays: CSR adjacency built from Arrow edges (`csr`), neighbourhood
sampling for training and sampled inference (`sampling`), whole-graph neighbour means for
layer-wise inference (`aggregation`), reproducible node/edge splits (`splits`), a node
collection and its edges pulled from the store (`datasets`), and the OGB on-disk reader
(`ogb`). No I/O but the store pull and the OGB reader; no models."""

from graphsvc.graph.aggregation import NeighbourMean, neighbour_mean_rows, sparse_times
from graphsvc.graph.csr import CSRGraph, EdgeIndexing, edges_to_positions, index_dtype
from graphsvc.graph.sampling import NeighbourSampler, SampledSubgraph, sample_neighbours

__all__ = [
    "CSRGraph", "EdgeIndexing", "NeighbourMean", "NeighbourSampler", "SampledSubgraph", "edges_to_positions",
    "index_dtype", "neighbour_mean_rows", "sample_neighbours", "sparse_times",
]
