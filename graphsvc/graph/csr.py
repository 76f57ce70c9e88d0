"""Arrow edges → CSR adjacency: node positions from keys, one row of neighbours per node."""

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
