"""Pull a node collection and its edges from the store into arrays a model can use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from graphsvc.errors import StoreError
from graphsvc.graph import CSRGraph, EdgeIndexing, edges_to_positions
from graphsvc.graph.splits import split_from_values
from graphsvc.store.base import GraphStore

if TYPE_CHECKING:
    from graphsvc.graph.relations import Memberships


@dataclass(frozen=True)
class NodeGraph:
    keys: pa.Array  # string, row i = node i
    features: np.ndarray  # [N, F] float32
    labels: np.ndarray | None  # [N] int64, -1 where missing
    graph: CSRGraph | None  # None only with build_graph=False
    dangling_edges: int
    # train/valid/test node positions when the data names them (a split attribute, an
    # OGB split directory); None: the trainer draws a seeded random split
    splits: dict[str, np.ndarray] | None = None
    source: str = ""
    # with build_graph=False: the edges as node positions, `graph` left None
    edge_positions: EdgeIndexing | None = None


def load_node_graph(
    store: GraphStore,
    nodes: str,
    edges: str,
    features: str = "features",
    label: str | None = None,
    batch_size: int = 65_536,
    split: str | None = None,
    build_graph: bool = True,
) -> NodeGraph:
    """`split` names an attribute holding `train`/`valid`/`test` per document. Without
    `build_graph` the edges come back as positions (for a caller that renumbers the
    nodes first: one CSR build instead of two)."""
    attributes = node_attributes(nodes, features, label, split)
    table = pa.Table.from_batches(
        list(store.pull(nodes, attributes, batch_size=batch_size)),
        schema=pa.schema([("_key", pa.string())] + list(attributes.items())),
    )
    return node_graph_from_table(
        table, nodes, features, lambda keys: edges_to_positions(keys, store.pull_edges(edges, batch_size=batch_size),
                                                                nodes),
        label=label, split=split, build_graph=build_graph, source=f"store:{nodes}/{edges}")


def node_attributes(nodes: str, features: str, label: str | None = None,
                    split: str | None = None) -> dict[str, pa.DataType]:
    """The attributes a node graph pulls, with their Arrow types."""
    attributes = {features: pa.list_(pa.float32())}
    if label:
        attributes[label] = pa.int64()
    if split:
        if split in attributes:
            raise StoreError(f"{nodes}: the split attribute '{split}' is also the features or the label")
        attributes[split] = pa.string()
    return attributes


def node_graph_from_table(table: pa.Table, nodes: str, features: str,
                          edge_positions: Callable[[pa.Array], EdgeIndexing], *, label: str | None = None,
                          split: str | None = None, build_graph: bool = True, source: str = "") -> NodeGraph:
    """A node graph from the pulled nodes (`_key` and `node_attributes`; row i = node i)
    and `edge_positions(keys)`: the edges as positions in those keys, however they were
    pulled (one stream here, a read task per key range on Ray)."""
    if table.num_rows == 0:
        raise StoreError(f"collection '{nodes}' has no documents")
    matrix = _feature_matrix(table, features, nodes)
    # the pulled copy goes before the edges come in: at 2.45M products it is another 1 GB
    table = table.drop_columns([features])
    labels = None
    if label:
        labels = table.column(label).to_numpy(zero_copy_only=False)
        labels = np.where(np.isnan(labels.astype(np.float64)), -1, labels).astype(np.int64)
    keys = table.column("_key").combine_chunks()
    splits = split_from_values(keys, table.column(split), split, nodes) if split else None
    indexed = edge_positions(keys)
    if not build_graph:
        return NodeGraph(keys, matrix, labels, None, indexed.dangling, splits, source=source, edge_positions=indexed)
    graph = CSRGraph.from_edges(indexed.source, indexed.target, table.num_rows)
    return NodeGraph(keys, matrix, labels, graph, indexed.dangling, splits, source=source)


def _feature_matrix(table: pa.Table, features: str, nodes: str) -> np.ndarray:
    """The [N, F] float32 matrix of a list<float32> column, written chunk by chunk into
    one array (no combined copy of the column, no float64 on the way)."""
    column = table.column(features)
    if column.null_count:
        first = table.column("_key").filter(column.is_null()).to_pylist()[:3]
        raise StoreError(f"{nodes}: {column.null_count} documents lack '{features}' (e.g. {', '.join(first)})")
    lengths = np.unique(pc.list_value_length(column).to_numpy())
    if len(lengths) != 1:
        raise StoreError(f"{nodes}: '{features}' arrays differ in length ({', '.join(map(str, lengths[:5]))})")
    matrix = np.empty((table.num_rows, int(lengths[0]) if len(lengths) else 0), np.float32)
    row = 0
    for chunk in column.chunks:
        values = chunk.flatten().to_numpy(zero_copy_only=False)
        matrix[row : row + len(chunk)] = values.reshape(len(chunk), matrix.shape[1])
        row += len(chunk)
    return matrix


def keys_without_text(store: GraphStore, collection: str, text: str, fallback: str, limit: int = 5) -> list[str]:
    """Up to `limit` keys of documents with neither `text` nor `fallback` (what
    `load_texts` skips), for error messages."""
    found: list[str] = []
    for batch in store.pull(collection, {text: pa.string(), fallback: pa.string()}):
        texts = pc.coalesce(batch.column(text), batch.column(fallback))
        present = pc.and_(pc.is_valid(texts), pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(texts)), 0))
        found += batch.column("_key").filter(pc.invert(pc.fill_null(present, False))).to_pylist()
        if len(found) >= limit:
            break
    return found[:limit]


def text_attributes(text: str, fallback: str) -> dict[str, pa.DataType]:
    """The attributes a text pull reads, with their Arrow types."""
    return {text: pa.string(), fallback: pa.string()}


def load_texts(store: GraphStore, collection: str, text: str, fallback: str) -> tuple[pa.Array, list[str], int]:
    """Keys and texts (`text`, else `fallback`) of the documents that have one, and the
    count of those without; in the order a full scan meets them."""
    attributes = text_attributes(text, fallback)
    table = pa.Table.from_batches(list(store.pull(collection, attributes)),
                                  schema=pa.schema([("_key", pa.string())] + list(attributes.items())))
    return texts_from_table(table, collection, text, fallback)


def texts_from_table(table: pa.Table, collection: str, text: str, fallback: str) -> tuple[pa.Array, list[str], int]:
    """`load_texts` of pulled documents (`_key` and `text_attributes`), however they were
    pulled (one stream here, a read task per key range on Ray), in the table's order."""
    texts = pc.coalesce(table.column(text), table.column(fallback))
    present = pc.and_(pc.is_valid(texts), pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(texts)), 0))
    keys = table.column("_key").filter(present).combine_chunks()
    kept = texts.filter(present).to_pylist()
    if not kept:
        raise StoreError(f"collection '{collection}' has no documents with '{text}' or '{fallback}'")
    return keys, kept, table.num_rows - len(kept)


def load_memberships(store: GraphStore, collection: str, keys: pa.Array, relations: Sequence[str],
                     batch_size: int = 65_536) -> dict[str, "Memberships"]:
    """For each edge collection of `relations` the store has: which movie (a position in
    `keys` of `collection`) is linked to which other node, whichever end the movie is
    (`directed_by` runs movies → people, `acted_in` people → movies). Edges whose movie
    end is not among `keys`, or with a movie at both ends, are left out."""
    from graphsvc.graph.relations import Memberships

    ids = pc.binary_join_element_wise(collection + "/", keys.cast(pa.string()), "")
    out: dict[str, Memberships] = {}
    for name in relations:
        if not store.has_collection(name):
            continue
        movies, vias = [], []
        for batch in store.pull_edges(name, batch_size=batch_size):
            ends = [pc.index_in(batch.column(side), value_set=ids) for side in ("_from", "_to")]
            from_movie, to_movie = pc.is_valid(ends[0]), pc.is_valid(ends[1])
            for movie_end, via_side, is_movie, other in ((0, "_to", from_movie, to_movie),
                                                         (1, "_from", to_movie, from_movie)):
                pick = pc.and_(is_movie, pc.invert(other))
                movies.append(pc.filter(ends[movie_end], pick).to_numpy(zero_copy_only=False).astype(np.int64))
                vias.append(pc.filter(batch.column(via_side), pick).to_numpy(zero_copy_only=False).astype(object))
        via_ids = np.concatenate(vias) if vias else np.zeros(0, object)
        _, numbers = np.unique(via_ids.astype(str), return_inverse=True) if len(via_ids) else (None, np.zeros(0))
        out[name] = Memberships(np.concatenate(movies) if movies else np.zeros(0, np.int64),
                                np.asarray(numbers, np.int64).reshape(-1))
    return out
