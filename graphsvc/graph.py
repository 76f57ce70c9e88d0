"""Arrow edges → CSR adjacency, and vectorised neighbourhood sampling.

PyG's loaders need pyg-lib, which cannot be installed here, so sampling is our own:
numpy only, no Python loop per node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


@dataclass(frozen=True)
class EdgeIndexing:
    """Edges turned into node positions, and what could not be."""

    source: np.ndarray  # int64 positions
    target: np.ndarray
    dangling: int  # edges whose _from or _to is not a node of the collection


def edges_to_positions(
    keys: pa.Array | Sequence[str],
    edge_batches: Iterable[pa.RecordBatch],
    collection: str,
    group_rows: int = 4_000_000,
) -> EdgeIndexing:
    """Map `_from`/`_to` ids (`collection/key`) to positions in `keys`.

    Batches are looked up in groups of about `group_rows` edges: each lookup builds a
    hash table of all keys, so one per small batch would cost more than the lookups."""
    key_array = pa.array(keys, pa.string()) if not isinstance(keys, pa.Array) else keys
    # the ids as edges name them (`collection/key`): looked up as they are, no slicing;
    # an id of another collection is simply not among them
    ids_of_keys = pc.binary_join_element_wise(collection + "/", key_array.cast(pa.string()), "")
    sources, targets, dangling = [], [], 0

    def lookup(group: list[pa.RecordBatch]) -> None:
        nonlocal dangling
        table = pa.Table.from_batches(group)
        positions = [pc.index_in(table.column(name), value_set=ids_of_keys) for name in ("_from", "_to")]
        valid = pc.and_(pc.is_valid(positions[0]), pc.is_valid(positions[1]))
        dangling += table.num_rows - (pc.sum(valid).as_py() or 0)
        for out, position in zip((sources, targets), positions):
            out.append(pc.filter(position, valid).to_numpy().astype(np.int64))

    group, rows = [], 0
    for batch in edge_batches:
        group.append(batch.select(["_from", "_to"]))
        rows += batch.num_rows
        if rows >= group_rows:
            lookup(group)
            group, rows = [], 0
    if group:
        lookup(group)
    if not sources:
        empty = np.zeros(0, np.int64)
        return EdgeIndexing(empty, empty, 0)
    return EdgeIndexing(np.concatenate(sources), np.concatenate(targets), dangling)


@dataclass(frozen=True)
class CSRGraph:
    """Adjacency in compressed sparse rows: the neighbours of node i are
    `indices[indptr[i]:indptr[i+1]]`, sorted."""

    indptr: np.ndarray
    indices: np.ndarray

    @property
    def num_nodes(self) -> int:
        return len(self.indptr) - 1

    @property
    def num_edges(self) -> int:
        return len(self.indices)

    def degree(self, nodes: np.ndarray | None = None) -> np.ndarray:
        if nodes is None:
            return np.diff(self.indptr)
        return self.indptr[nodes + 1] - self.indptr[nodes]

    def neighbours(self, node: int) -> np.ndarray:
        return self.indices[self.indptr[node] : self.indptr[node + 1]]

    def rows(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The adjacency of `nodes` only, in that order: (indptr, indices)."""
        nodes = np.asarray(nodes, np.int64)
        starts, degrees = self.indptr[nodes], self.degree(nodes)
        indptr = np.zeros(len(nodes) + 1, np.int64)
        np.cumsum(degrees, out=indptr[1:])
        owners = np.repeat(np.arange(len(nodes)), degrees)
        return indptr, self.indices[starts[owners] + np.arange(indptr[-1]) - indptr[:-1][owners]]

    @classmethod
    def from_edges(
        cls,
        source: np.ndarray,
        target: np.ndarray,
        num_nodes: int,
        undirected: bool = True,
    ) -> "CSRGraph":
        """Build from edge lists; self-loops and duplicate edges are dropped. With
        `undirected`, each edge is usable both ways (co-purchases have no direction)."""
        source = np.asarray(source, np.int64)
        target = np.asarray(target, np.int64)
        if undirected:
            source, target = np.concatenate([source, target]), np.concatenate([target, source])
        keep = source != target
        # one int64 per edge: sorting it orders by row then column and exposes duplicates
        packed = np.unique(source[keep] * num_nodes + target[keep])
        rows, columns = np.divmod(packed, num_nodes)
        indptr = np.zeros(num_nodes + 1, np.int64)
        np.cumsum(np.bincount(rows, minlength=num_nodes), out=indptr[1:])
        return cls(indptr, columns.astype(np.int64))


@dataclass(frozen=True)
class SampledSubgraph:
    """The computation graph of a batch of target nodes.

    `nodes` holds global node ids ordered by hop: the targets first, then the nodes first
    reached at hop 1, hop 2, … `edge_index[0]` are message sources (neighbours) and
    `edge_index[1]` their destinations, both as positions in `nodes`. `sizes[i]` is the
    number of leading nodes whose representation layer i must compute: layer i of L only
    needs the nodes within L-1-i hops of a target.
    """

    nodes: np.ndarray
    edge_index: np.ndarray
    sizes: np.ndarray
    num_targets: int


class NeighbourSampler:
    """Samples up to `fanouts[h]` distinct neighbours per node at hop h (-1: all of them).

    Seeded per batch, so the same batch always gets the same computation graph whatever
    order or concurrency the batches run in.
    """

    def __init__(self, graph: CSRGraph, fanouts: Sequence[int], seed: int = 0):
        self.graph = graph
        self.fanouts = list(fanouts)
        self.seed = seed
        self._local = np.full(graph.num_nodes, -1, np.int64)

    def sample(self, targets: np.ndarray, batch_number: int = 0) -> SampledSubgraph:
        rng = np.random.default_rng([self.seed, batch_number])
        targets = np.asarray(targets, np.int64)
        local = self._local
        if np.unique(targets).size != targets.size:
            raise ValueError("targets must be distinct")
        node_chunks, counts = [targets], [targets.size]
        try:
            local[targets] = np.arange(targets.size)
            frontier, total = targets, targets.size
            edge_sources, edge_targets = [], []
            for fanout in self.fanouts:
                owners, picked = sample_neighbours(self.graph, frontier, fanout, rng)
                new = np.unique(picked[local[picked] < 0])
                local[new] = total + np.arange(new.size)
                total += new.size
                edge_sources.append(local[picked])
                edge_targets.append(local[frontier[owners]])
                node_chunks.append(new)
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
        return SampledSubgraph(nodes, edge_index, sizes, targets.size)


def sample_neighbours(
    graph: CSRGraph, nodes: np.ndarray, fanout: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """For each node, up to `fanout` distinct neighbours drawn uniformly (all when
    fanout < 0 or the degree is smaller). Returns (owner position in `nodes`, neighbour id)."""
    starts = graph.indptr[nodes]
    degrees = graph.indptr[nodes + 1] - starts
    total = int(degrees.sum())
    owners = np.repeat(np.arange(nodes.size), degrees)
    offsets = np.cumsum(degrees) - degrees
    slots = starts[owners] + (np.arange(total) - offsets[owners])
    if fanout < 0 or total == 0 or degrees.max() <= fanout:
        return owners, graph.indices[slots]
    # a random key per candidate; the `fanout` smallest keys of each node win
    order = np.lexsort((rng.random(total), owners))
    rank = np.arange(total) - offsets[owners[order]]
    chosen = order[rank < fanout]
    return owners[chosen], graph.indices[slots[chosen]]


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

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            return (self._adjacency @ self._torch.from_numpy(np.ascontiguousarray(rows, np.float32))).numpy()
