"""Nodes split into partitions for distributed layer-wise inference, and each partition's
halo: the distinct neighbours it needs from other partitions. Numpy only (no Ray).

A partition owns a contiguous range of a node order. Key order (the store's) is free but
blind to the graph: on a random-looking key order a partition's halo approaches every
node. Breadth-first order puts a node's neighbours close behind it, so a range holds
whole neighbourhoods and the halo is mostly its two boundaries' worth of nodes — the
cheap stand-in for METIS that DistDGL uses (its default needs a partitioning pass over
the whole graph on one machine). Partitions share nothing but halo rows, so the bytes a
layer moves between them are the halo rows' sum times the row width.

`partition_relations` splits the movies of a graph-aware movie model the same way: the
graph is the union of its relations' weighted movie × movie CSRs (`graphsvc.graph.relations`:
"the mean of each person's other movies"), so a partition's halo is every movie its
rows' relation means read, and each partition carries its rows of every relation with
the columns renumbered to its local rows.

`partition_rows` splits a subset of the nodes (the rows an incremental re-index
recomputes in one layer) the same way: ranges of the subset in the node order, each with
the neighbours it reads (its halo). There every input row comes from the driver, which
holds the whole layer input, so a subset partition sends nothing to the others.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphsvc.graph.csr import CSRGraph
from graphsvc.graph.relations import MovieRelations, WeightedRows

ORDERS = ("bfs", "key")


@dataclass(frozen=True)
class Partition:
    """One partition's part of the graph. Its local row numbers are `nodes` =
    [owned, halo]: the owned rows first (in partition order), then the halo grouped by
    owning partition (ascending), node numbers ascending within each group. In a subset
    partitioning (`partition_rows`) the halo is every neighbour not owned, ascending,
    `halo_owners` is [0, len(halo)] (one source: the driver) and `sends` is empty."""

    number: int
    owned: np.ndarray  # int64 node numbers this partition computes
    halo: np.ndarray  # int64 node numbers of neighbours owned by other partitions
    halo_owners: np.ndarray  # int64 [parts + 1] offsets: halo[halo_owners[q]:halo_owners[q+1]] is owned by q
    indptr: np.ndarray  # int64 CSR of the owned rows (len(owned) + 1) ...
    indices: np.ndarray  # ... over local row numbers (into `nodes`)
    sends: tuple[np.ndarray, ...]  # sends[q]: positions in `owned` of the rows partition q's halo needs

    @property
    def nodes(self) -> np.ndarray:
        return np.concatenate([self.owned, self.halo])

    @property
    def local_graph(self) -> CSRGraph:
        """The owned rows' adjacency over local row numbers."""
        return CSRGraph(self.indptr, self.indices)

    def neighbour_means(self, local: np.ndarray) -> np.ndarray:
        """[owned, d]: each owned row's mean of its neighbours' rows, given `local` (the
        layer's input for `nodes`, in that order): what the layer's neighbour input is."""
        from graphsvc.graph.aggregation import neighbour_mean_rows

        return neighbour_mean_rows(self.local_graph, np.arange(len(self.owned)), local)


@dataclass(frozen=True)
class RelationPartition(Partition):
    """A partition of a graph-aware movie model's movies (`partition_relations`): its
    adjacency is the union of the relations', and `relation_means` holds, per relation, the
    owned rows' weighted row over local row numbers."""

    relation_means: tuple[WeightedRows, ...]

    def neighbour_means(self, local: np.ndarray) -> np.ndarray:
        """[owned, R × d]: every relation's mean for the owned rows, side by side (as
        `MovieRelations.neighbour_means` gives them for all movies)."""
        parts = [mean.times(local) for mean in self.relation_means]
        return np.concatenate(parts, axis=1) if parts else np.zeros((len(self.owned), 0), np.float32)


@dataclass(frozen=True)
class Partitioning:
    order: str
    parts: tuple[Partition, ...]

    @property
    def halo_sizes(self) -> list[int]:
        return [len(part.halo) for part in self.parts]

    def summary(self, num_nodes: int) -> dict:
        return {"partitions": len(self.parts), "order": self.order,
                "owned": [len(part.owned) for part in self.parts], "halo": self.halo_sizes,
                "halo_share": round(sum(self.halo_sizes) / max(num_nodes, 1), 4)}


def node_order(graph: CSRGraph, order: str = "bfs") -> np.ndarray:
    """Every node once: in key order (`key`: 0..N-1), or breadth-first (`bfs`), each
    connected component from its lowest-numbered unvisited node, neighbours in number
    order — a level at a time, vectorised."""
    n = graph.num_nodes
    if order == "key":
        return np.arange(n, dtype=np.int64)
    if order != "bfs":
        raise ValueError(f"unknown node order '{order}' ({' or '.join(ORDERS)})")
    seen = np.zeros(n, bool)
    out = np.empty(n, np.int64)
    filled, next_root = 0, 0
    while filled < n:
        while seen[next_root]:
            next_root += 1
        frontier = np.array([next_root], np.int64)
        seen[next_root] = True
        while len(frontier):
            out[filled : filled + len(frontier)] = frontier
            filled += len(frontier)
            _, neighbours = graph.rows(frontier)
            # first appearance in frontier order, each new node once
            fresh = neighbours[~seen[neighbours]]
            _, first = np.unique(fresh, return_index=True)
            frontier = fresh[np.sort(first)]
            seen[frontier] = True
    return out


def partition_graph(graph: CSRGraph, parts: int, order: str = "bfs") -> Partitioning:
    """`parts` near-equal contiguous ranges of `node_order(graph, order)` (fewer when
    there are fewer nodes), each with its halo, local adjacency and what it sends to
    the others."""
    n = graph.num_nodes
    parts = max(1, min(parts, n))
    ranked = node_order(graph, order)
    bounds = [n * p // parts for p in range(parts + 1)]
    owner = np.empty(n, np.int64)
    for p in range(parts):
        owner[ranked[bounds[p] : bounds[p + 1]]] = p
    position = np.empty(n, np.int64)  # each node's row in its owner's `owned`
    for p in range(parts):
        position[ranked[bounds[p] : bounds[p + 1]]] = np.arange(bounds[p + 1] - bounds[p])

    plans = []
    for p in range(parts):
        owned = ranked[bounds[p] : bounds[p + 1]].astype(np.int64)
        indptr, neighbours = graph.rows(owned)
        outside = np.unique(neighbours[owner[neighbours] != p])
        # grouped by owner, ascending within: a stable sort of the sorted node numbers by owner
        halo = outside[np.argsort(owner[outside], kind="stable")]
        halo_owners = np.searchsorted(owner[halo], np.arange(parts + 1)).astype(np.int64)
        # local rows: an owned node's position, a halo node's place in the halo (ordered by (owner, node))
        inside = owner[neighbours] == p
        local = np.where(inside, position[neighbours], 0)
        halo_key = owner[halo] * n + halo
        local[~inside] = len(owned) + np.searchsorted(halo_key, owner[neighbours[~inside]] * n + neighbours[~inside])
        plans.append((owned, halo, halo_owners, indptr, local))

    result = []
    for p, (owned, halo, halo_owners, indptr, indices) in enumerate(plans):
        # what p sends to q: the rows of q's halo that p owns, in q's halo order
        sends = tuple(position[plans[q][1][plans[q][2][p] : plans[q][2][p + 1]]] if q != p
                      else np.zeros(0, np.int64) for q in range(parts))
        result.append(Partition(p, owned, halo, halo_owners, indptr, indices, sends))
    return Partitioning(order, tuple(result))


def relations_graph(relations: MovieRelations) -> CSRGraph:
    """The movies linked where any relation's mean reads one from another (the pattern is
    symmetric): what partitions and halos are made of."""
    rows, columns = [], []
    for mean in relations.means:
        rows.append(np.repeat(np.arange(mean.num_rows, dtype=np.int64), np.diff(mean.indptr)))
        columns.append(mean.indices)
    empty = np.zeros(0, np.int64)
    return CSRGraph.from_edges(np.concatenate(rows) if rows else empty, np.concatenate(columns) if columns else empty,
                               relations.num_movies)


def partition_relations(relations: MovieRelations, parts: int, order: str = "bfs") -> Partitioning:
    """`partition_graph` over `relations_graph(relations)`, each partition with its owned
    rows of every relation mean, the columns renumbered to its local rows ([owned, halo])
    and sorted within a row."""
    plan = partition_graph(relations_graph(relations), parts, order)
    local_of = np.empty(relations.num_movies, np.int64)
    out = []
    for part in plan.parts:
        nodes = part.nodes
        local_of[nodes] = np.arange(len(nodes))
        means = []
        for mean in relations.means:
            own = mean.rows(part.owned)
            owners = np.repeat(np.arange(own.num_rows, dtype=np.int64), np.diff(own.indptr))
            columns = local_of[own.indices]
            order_in_row = np.argsort(owners * len(nodes) + columns, kind="stable")
            means.append(WeightedRows(own.indptr, columns[order_in_row], own.weights[order_in_row], len(nodes)))
        out.append(RelationPartition(part.number, part.owned, part.halo, part.halo_owners, part.indptr,
                                     part.indices, part.sends, tuple(means)))
    return Partitioning(plan.order, tuple(out))


def partition_rows(graph: CSRGraph, rows: np.ndarray, parts: int, order: str = "bfs",
                   ranked: np.ndarray | None = None) -> Partitioning:
    """`rows` (distinct node numbers) in at most `parts` near-equal contiguous ranges of
    `node_order(graph, order)` (`ranked`: that order, already computed), each with its halo (the
    neighbours of its rows that it does not own) and local adjacency. Rows are one
    layer's to recompute, not a layer's every node: the halo's rows come from whoever
    holds the layer's input, and no partition sends to another."""
    rows = np.asarray(rows, np.int64)
    n = graph.num_nodes
    if order == "key":
        rows = np.sort(rows)
    else:
        ranked = node_order(graph, order) if ranked is None else ranked
        rank = np.empty(n, np.int64)
        rank[ranked] = np.arange(n)
        rows = rows[np.argsort(rank[rows], kind="stable")]
    parts = max(1, min(parts, len(rows)))
    bounds = [len(rows) * p // parts for p in range(parts + 1)]
    position = np.full(n, -1, np.int64)  # a row's place in its partition's `owned` (the partition being built)
    result = []
    for p in range(parts):
        owned = rows[bounds[p] : bounds[p + 1]]
        position[owned] = np.arange(len(owned))
        indptr, neighbours = graph.rows(owned)
        inside = position[neighbours] >= 0
        halo = np.unique(neighbours[~inside])
        local = np.where(inside, position[neighbours], 0)
        local[~inside] = len(owned) + np.searchsorted(halo, neighbours[~inside])
        position[owned] = -1
        result.append(Partition(p, owned, halo, np.array([0, len(halo)], np.int64), indptr, local, ()))
    return Partitioning(order, tuple(result))


def default_partitions(num_nodes: int, actors: int, rows_per_partition: int = 1_000_000) -> int:
    """Two partitions per actor (one computing while the other's rows move), and at least
    one per `rows_per_partition` nodes (a partition's rows and halo fit a worker)."""
    return max(2 * actors, -(-num_nodes // rows_per_partition), 1)
