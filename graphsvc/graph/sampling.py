"""Vectorised neighbourhood sampling for GraphSAGE mini-batches.

PyG's loaders need pyg-lib, which cannot be installed here, so sampling is our own:
numpy only, no Python loop per node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from graphsvc.graph.csr import CSRGraph, index_dtype


@dataclass(frozen=True)
class SampledSubgraph:
    """The computation graph of a batch of target nodes.

    `nodes` holds global node ids ordered by hop: the targets first, then the nodes first
    reached at hop 1, hop 2, … `edge_index[0]` are message sources (neighbours) and
    `edge_index[1]` their destinations, both as positions in `nodes`; destinations never
    decrease along the edges. `sizes[i]` is the number of leading nodes whose
    representation layer i must compute: layer i of L only needs the nodes within L-1-i
    hops of a target.
    """

    nodes: np.ndarray
    edge_index: np.ndarray
    sizes: np.ndarray
    num_targets: int

    def adjacency(self, layer: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Layer `layer`'s messages as CSR rows, one per node it computes: (indptr,
        source positions, number of input rows). Destinations are sorted, so a layer's
        edges are a prefix of `edge_index` and its rows are counted, not sorted."""
        rows = int(self.sizes[layer])
        inputs = int(self.sizes[layer - 1]) if layer > 0 else len(self.nodes)
        destinations = self.edge_index[1]
        end = int(np.searchsorted(destinations, rows))
        dtype = index_dtype(inputs, end)
        indptr = np.zeros(rows + 1, dtype)
        np.cumsum(np.bincount(destinations[:end], minlength=rows), out=indptr[1:])
        return indptr, self.edge_index[0, :end].astype(dtype), inputs


class NeighbourSampler:
    """Samples up to `fanouts[h]` distinct neighbours per node at hop h (-1: all of them).

    Seeded per batch, so the same batch always gets the same computation graph whatever
    order the batches run in. One sampler samples one batch at a time (it keeps scratch
    arrays the size of the graph); give each thread its own.
    """

    def __init__(self, graph: CSRGraph, fanouts: Sequence[int], seed: int = 0):
        self.graph = graph
        self.fanouts = list(fanouts)
        self.seed = seed
        position = index_dtype(graph.num_nodes)
        self._local = np.full(graph.num_nodes, -1, position)
        self._reached = np.zeros(graph.num_nodes, bool)

    def _distinct_new(self, picked: np.ndarray) -> np.ndarray:
        """The picked nodes not yet in the subgraph, once each, ascending (as np.unique
        would give them). Many picks are marked in a graph-sized boolean map and read back
        in one pass, which is linear where np.unique sorts; few picks are just sorted."""
        candidates = picked[self._local[picked] < 0]
        if len(candidates) * 16 < len(self._reached):
            return np.unique(candidates)
        self._reached[candidates] = True
        new = np.flatnonzero(self._reached).astype(self._local.dtype)
        self._reached[new] = False
        return new

    def sample(self, targets: np.ndarray, batch_number: int = 0) -> SampledSubgraph:
        rng = np.random.default_rng([self.seed, batch_number])
        targets = np.asarray(targets, self._local.dtype)
        local = self._local
        if np.unique(targets).size != targets.size:
            raise ValueError("targets must be distinct")
        node_chunks, counts = [targets], [targets.size]
        try:
            local[targets] = np.arange(targets.size)
            frontier, first, total = targets, 0, targets.size
            edge_sources, edge_targets = [], []
            for fanout in self.fanouts:
                owners, picked = sample_neighbours(self.graph, frontier, fanout, rng)
                new = self._distinct_new(picked)
                local[new] = np.arange(total, total + new.size)
                edge_sources.append(local[picked].astype(np.int64))
                # the frontier holds positions first..first+len-1, in order
                edge_targets.append(owners + first)
                node_chunks.append(new)
                first, total = total, total + new.size
                counts.append(total)
                frontier = new
            nodes = np.concatenate(node_chunks)
        finally:
            local[np.concatenate(node_chunks)] = -1
        edge_index = np.stack(
            [np.concatenate(edge_sources), np.concatenate(edge_targets)]
        ) if edge_sources else np.zeros((2, 0), np.int64)
        hops = len(self.fanouts)
        # layer i computes nodes within hops-1-i hops: counts[hops-1-i]
        sizes = np.array([counts[hops - 1 - i] for i in range(hops)], np.int64)
        return SampledSubgraph(nodes.astype(np.int64), edge_index, sizes, targets.size)


def sample_neighbours(
    graph: CSRGraph, nodes: np.ndarray, fanout: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """For each node, up to `fanout` distinct neighbours drawn uniformly (all when
    fanout < 0 or the degree is smaller). Returns (owner position in `nodes`, neighbour
    id), grouped by owner in the order of `nodes`."""
    starts = graph.indptr[nodes].astype(np.int64)
    degrees = graph.indptr[nodes + 1] - starts
    take = degrees if fanout < 0 else np.minimum(degrees, fanout)
    first = np.cumsum(take) - take
    owners = np.repeat(np.arange(nodes.size), take)
    # the k-th pick of a node is its k-th neighbour, unless the node has more than fanout
    slot = np.arange(len(owners)) - first[owners]
    many = np.flatnonzero(degrees > take)
    if many.size:
        slot[(first[many, None] + np.arange(fanout)).ravel()] = _distinct_offsets(degrees[many], fanout, rng).ravel()
    return owners, graph.indices[starts[owners] + slot]


def _distinct_offsets(degrees: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k distinct offsets in [0, degree) per row, each k-subset equally likely: Floyd's
    algorithm, one vectorised step per pick, so the cost is rows × k², not a sort of every
    neighbour of every node (what a random key per candidate costs)."""
    chosen = np.empty((len(degrees), k), np.int64)
    draws = rng.random((len(degrees), k))
    for step in range(k):
        ceiling = degrees - k + step  # pick in [0, ceiling]; ceiling itself if taken already
        pick = np.minimum((draws[:, step] * (ceiling + 1)).astype(np.int64), ceiling)
        if step:
            taken = (chosen[:, :step] == pick[:, None]).any(axis=1)
            pick = np.where(taken, ceiling, pick)
        chosen[:, step] = pick
    return chosen
