"""The pull on Ray: one read task per key range of the nodes and of the edges, at most
GRAPHSVC_RAY_READERS per store coordinator at once, the CSR assembled on the driver from
the pieces.

The ranges come from the store (`GraphStore.key_ranges`, its own order of the keys), and
node i is the i-th key in that order: the same keys, features and edges as the local pull
(`graphsvc.graph.datasets.load_node_graph`), numbered in key order rather than in the
order a full scan meets them (the same numbering where the two agree, as in a store
loaded in key order).

Each task opens the store itself (`GraphStore.address`): ArangoDB with a streaming
cursor per range; the embedded store read-only — DuckDB lets any number of processes
read a file while none writes it, so the driver lets go of its own connection first.
An edge task turns its edges' `_from`/`_to` into node positions where it runs (the keys
put once in the object store), so integers come back, not ids. A store no other process
can open (in memory) is pulled on the driver, as the local executor does.

The texts of a sentence-encoder job (`pull_texts_on_ray`) come the same way: a read task
per key range of `text` and its fallback, the documents without either left out as
`load_texts` leaves them out — the same keys, texts and count skipped, in key order
(the local pull's order is a full scan's, which is key order where the store was loaded
in it).
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa

from graphsvc.distributed.cluster import import_ray, run_bounded, task_resources
from graphsvc.graph import EdgeIndexing, edges_to_positions
from graphsvc.graph.csr import index_dtype
from graphsvc.graph.datasets import (
    NodeGraph,
    load_node_graph,
    load_texts,
    node_attributes,
    node_graph_from_table,
    text_attributes,
    texts_from_table,
)
from graphsvc.settings import RAY_READERS, read
from graphsvc.store.base import GraphStore, KeyRange, StoreAddress

#: at least one read task per this many documents (a task's rows stay well within a worker)
RANGE_ROWS = 1_000_000
#: times Ray retries a read task whose worker died (reads are idempotent)
READ_RETRIES = 3


def pull_node_graph_on_ray(store: GraphStore, nodes: str, edges: str, features: str = "features", *,
                           readers: int | None = None, batch_size: int = 65_536, address: Any = None,
                           build_graph: bool = True) -> tuple[NodeGraph, dict]:
    """The node graph of `nodes` / `edges` read by Ray tasks, a key range each, and what
    the pull did (ranges, readers, seconds per side). `readers`: tasks at once per
    coordinator (default GRAPHSVC_RAY_READERS). `address`: how the tasks open the store
    (default `store.address()`; tests give one that opens a recording stub). The driver's
    store is released before the tasks run; calls on it afterwards reopen it. Without
    `build_graph` the edges come back as positions, as `load_node_graph` gives them."""
    address = address if address is not None else store.address()
    if address is None:
        started = time.perf_counter()
        data = load_node_graph(store, nodes, edges, features, batch_size=batch_size, build_graph=build_graph)
        return data, _on_driver(store, "nodes_and_edges", started)
    ray = import_ray()
    limit = _readers(address, readers)
    planned = time.perf_counter()
    edge_ranges = store.key_ranges(edges, _parts(store, edges, limit))
    table, pulled = _pull_table(ray, store, address, nodes, node_attributes(nodes, features), limit, batch_size)
    nodes_done = time.perf_counter()

    def edge_positions(keys: pa.Array) -> EdgeIndexing:
        keys_ref = ray.put(keys)
        read_edges = ray.remote(read_edge_range).options(**_read_options(ray))
        pieces = run_bounded(ray, [partial(read_edges.remote, address, edges, key_range, nodes, keys_ref, batch_size)
                                   for key_range in edge_ranges], limit)
        position_type = index_dtype(len(keys))
        return EdgeIndexing(np.concatenate([p.source for p in pieces] or [np.zeros(0, position_type)]),
                            np.concatenate([p.target for p in pieces] or [np.zeros(0, position_type)]),
                            int(sum(p.dangling for p in pieces)))

    data = node_graph_from_table(table, nodes, features, edge_positions, build_graph=build_graph,
                                 source=f"store:{nodes}/{edges}")
    return data, {"where": "ray", "readers": limit, "node_ranges": pulled["ranges"], "edge_ranges": len(edge_ranges),
                  "seconds": {"ranges": round(pulled["started"] - planned, 3),
                              "nodes": round(nodes_done - pulled["started"], 3),
                              "edges_and_csr": round(time.perf_counter() - nodes_done, 3)}}


def pull_texts_on_ray(store: GraphStore, collection: str, text: str, fallback: str, *, readers: int | None = None,
                      batch_size: int = 65_536, address: Any = None) -> tuple[tuple[pa.Array, list[str], int], dict]:
    """`load_texts` read by Ray tasks, a key range each: (keys, texts, count skipped) in
    key order, and what the pull did. `readers`, `address`: as `pull_node_graph_on_ray`;
    a store no worker can open is read on the driver, in its own order."""
    address = address if address is not None else store.address()
    started = time.perf_counter()
    if address is None:
        return load_texts(store, collection, text, fallback), _on_driver(store, "texts", started)
    ray = import_ray()
    limit = _readers(address, readers)
    table, pulled = _pull_table(ray, store, address, collection, text_attributes(text, fallback), limit, batch_size)
    texts = texts_from_table(table, collection, text, fallback)
    return texts, {"where": "ray", "readers": limit, "ranges": pulled["ranges"],
                   "seconds": {"ranges": round(pulled["started"] - started, 3),
                               "texts": round(time.perf_counter() - pulled["started"], 3)}}


class RayReads:
    """A re-index's inputs (`graphsvc.incremental.targets.InputReads`) read by Ray tasks,
    a key range each; `report`: what the last pull did."""

    def __init__(self, readers: int | None = None):
        self.readers = readers
        self.report: dict | None = None

    def node_graph(self, store: GraphStore, nodes: str, edges: str, features: str) -> NodeGraph:
        data, self.report = pull_node_graph_on_ray(store, nodes, edges, features, readers=self.readers,
                                                   build_graph=False)
        return data

    def texts(self, store: GraphStore, collection: str, text: str, fallback: str) -> tuple[pa.Array, list[str], int]:
        texts, self.report = pull_texts_on_ray(store, collection, text, fallback, readers=self.readers)
        return texts


def _pull_table(ray, store: GraphStore, address: Any, collection: str, attributes: dict[str, pa.DataType],
                limit: int, batch_size: int) -> tuple[pa.Table, dict]:
    """`_key` and `attributes` of every document of `collection`, a read task per key
    range, at most `limit` at once, concatenated in key order; and the range count and
    when the reads started. The driver's store is released before they do."""
    key_ranges = store.key_ranges(collection, _parts(store, collection, limit))
    store.release()  # the embedded store's readers cannot open the file while this process writes it
    started = time.perf_counter()
    read = ray.remote(read_document_range).options(**_read_options(ray))
    tables = run_bounded(ray, [partial(read.remote, address, collection, attributes, key_range, batch_size)
                               for key_range in key_ranges], limit)
    schema = pa.schema([("_key", pa.string())] + list(attributes.items()))
    table = pa.concat_tables([t.cast(schema) for t in tables]) if tables else schema.empty_table()
    return table, {"ranges": len(key_ranges), "started": started}


def _readers(address: Any, readers: int | None) -> int:
    """Read tasks at once: `readers` (default GRAPHSVC_RAY_READERS) per coordinator."""
    return max(1, (readers or read(RAY_READERS)) * max(1, getattr(address, "coordinators", 1)))


def _read_options(ray) -> dict:
    return {"max_retries": READ_RETRIES, **task_resources(ray)}


def _on_driver(store: GraphStore, what: str, started: float) -> dict:
    """The report of a pull done on the driver because no worker can open the store."""
    return {"where": "driver", "reason": f"{store.url} cannot be opened by another process",
            "seconds": {what: round(time.perf_counter() - started, 3)}}


def _parts(store: GraphStore, collection: str, readers: int) -> int:
    """Two ranges per reader (one finishing while the next starts), and at least one per
    RANGE_ROWS documents."""
    return max(2 * readers, -(-store.collection(collection).count // RANGE_ROWS), 1)


def read_document_range(address: StoreAddress, collection: str, attributes: dict, key_range: KeyRange,
                    batch_size: int) -> pa.Table:
    """One key range of a collection's documents (`_key` and `attributes`), as a table (in a Ray worker)."""
    schema = pa.schema([("_key", pa.string())] + list(attributes.items()))
    with address.open() as store:
        return pa.Table.from_batches(list(store.pull_range(collection, attributes, key_range, batch_size)),
                                     schema=schema)


def read_edge_range(address: StoreAddress, collection: str, key_range: KeyRange, nodes: str, keys: pa.Array,
                    batch_size: int) -> EdgeIndexing:
    """One key range of the edges as positions in `keys` (in a Ray worker)."""
    with address.open() as store:
        return edges_to_positions(keys, store.pull_edges_range(collection, key_range, batch_size), nodes)
