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

    source: np.ndarray  # positions, int32 when they fit (`index_dtype`)
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
    position_type = index_dtype(len(key_array))

    def lookup(group: list[pa.RecordBatch]) -> None:
        nonlocal dangling
        table = pa.Table.from_batches(group)
        positions = [pc.index_in(table.column(name), value_set=ids_of_keys) for name in ("_from", "_to")]
        valid = pc.and_(pc.is_valid(positions[0]), pc.is_valid(positions[1]))
        dangling += table.num_rows - (pc.sum(valid).as_py() or 0)
        for out, position in zip((sources, targets), positions):
            out.append(pc.filter(position, valid).to_numpy().astype(position_type))

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
        empty = np.zeros(0, position_type)
        return EdgeIndexing(empty, empty, 0)
    return EdgeIndexing(np.concatenate(sources), np.concatenate(targets), dangling)


def index_dtype(*extents: int) -> type:
    """int32 when every position up to the largest extent fits in it, else int64: at
    ogbn-products size (2.45M nodes, 124M adjacency entries) int32 halves the CSR."""
    return np.int32 if max(extents, default=0) < 2**31 else np.int64


@dataclass(frozen=True)
class CSRGraph:
    """Adjacency in compressed sparse rows: the neighbours of node i are
    `indices[indptr[i]:indptr[i+1]]`, sorted. Both arrays have one integer type
    (`index_dtype`): int32 unless the graph is too large for it, and a torch sparse CSR
    tensor (which wants the two types equal) takes them without a copy."""

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
        """The adjacency of `nodes` only, in that order: (indptr, indices), both int64."""
        nodes = np.asarray(nodes, np.int64)
        starts, degrees = self.indptr[nodes].astype(np.int64), self.degree(nodes)
        indptr = np.zeros(len(nodes) + 1, np.int64)
        np.cumsum(degrees, out=indptr[1:])
        owners = np.repeat(np.arange(len(nodes)), degrees)
        slots = starts[owners] + np.arange(indptr[-1]) - indptr[:-1][owners]
        return indptr, self.indices[slots].astype(np.int64)

    @classmethod
    def from_edges(
        cls,
        source: np.ndarray,
        target: np.ndarray,
        num_nodes: int,
        undirected: bool = True,
        chunk: int = 1 << 22,
    ) -> "CSRGraph":
        """Build from edge lists; self-loops and duplicate edges are dropped. With
        `undirected`, each edge is usable both ways (co-purchases have no direction).

        Memory: one int64 key per adjacency entry, sorted in place, is the only full-size
        temporary (1 GB at ogbn-products' 124M entries); everything else is done `chunk`
        entries at a time and the result is int32 where it fits."""
        source, target = np.asarray(source), np.asarray(target)
        directions = ((source, target), (target, source)) if undirected else ((source, target),)
        # key = row * num_nodes + column: sorting orders by row then column and exposes
        # duplicates; a self-loop gets -1 and sorts first, to be cut off
        keys = np.empty(len(source) * len(directions), np.int64)
        for part, (rows, columns) in enumerate(directions):
            for start in range(0, len(source), chunk):
                r = rows[start : start + chunk].astype(np.int64)
                c = columns[start : start + chunk].astype(np.int64)
                out = keys[part * len(source) + start :][: len(r)]
                np.multiply(r, num_nodes, out=out)
                out += c
                out[r == c] = -1
        keys.sort()
        first = int(np.searchsorted(keys, 0))
        dtype = index_dtype(num_nodes, len(keys))
        indices = np.empty(len(keys) - first, dtype)
        counts = np.zeros(num_nodes, np.int64)
        kept = 0
        for start in range(first, len(keys), chunk):
            block = keys[start : start + chunk]
            distinct = block[np.concatenate(([start == first or keys[start - 1] != block[0]], block[1:] != block[:-1]))]
            rows, columns = np.divmod(distinct, num_nodes)
            indices[kept : kept + len(columns)] = columns
            kept += len(columns)
            counts += np.bincount(rows, minlength=num_nodes)
        del keys
        indptr = np.zeros(num_nodes + 1, dtype)
        np.cumsum(counts, out=indptr[1:])
        # a copy only when duplicates were dropped (resize in place would refuse a view)
        return cls(indptr, indices[:kept].copy() if kept < len(indices) else indices)


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


def sparse_times(matrix, dense):
    """matrix (sparse CSR) @ dense. On CPU into an uninitialised result with beta=0: the
    plain product zero-fills a result and copies it once more, which took 3–5× the time of
    the product itself."""
    import torch

    if matrix.device.type != "cpu":
        return matrix @ dense
    out = torch.empty((matrix.shape[0], dense.shape[1]), dtype=dense.dtype)
    return torch.addmm(out, matrix, dense, beta=0, out=out)
