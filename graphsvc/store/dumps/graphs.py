"""Named graphs in a dump: the `_graphs` collection's documents, read into `GraphInfo` and
written from it."""

from __future__ import annotations

from graphsvc.errors import DumpFormatError
from graphsvc.store.base import EdgeDefinition, GraphInfo
from graphsvc.store.dumps.layout import Dump
from graphsvc.store.dumps.operations import DumpOperation, iter_operations

GRAPHS_COLLECTION = "_graphs"


def read_graphs(dump: Dump) -> list[GraphInfo]:
    """The named graphs stored in the dump's `_graphs` collection, sorted by name."""
    if not dump.has_collection(GRAPHS_COLLECTION):
        return []
    graphs: dict[str, GraphInfo] = {}
    for op in iter_operations(dump.collection(GRAPHS_COLLECTION)):
        if op.op == "remove":
            graphs.pop(op.key, None)  # type: ignore[arg-type]
            continue
        graphs[op.key] = _graph_from_document(op)  # type: ignore[index]
    return [graphs[name] for name in sorted(graphs)]


def _graph_from_document(op: DumpOperation) -> GraphInfo:
    doc = op.document or {}
    raw_defs = doc.get("edgeDefinitions") or []
    if not isinstance(raw_defs, list):
        raise DumpFormatError(str(op.path), f"graph '{op.key}': edgeDefinitions is not a list", line=op.line)
    defs = []
    for d in raw_defs:
        if not isinstance(d, dict) or not isinstance(d.get("collection"), str):
            raise DumpFormatError(
                str(op.path), f"graph '{op.key}': edge definition without a collection", line=op.line
            )
        ends = []
        for side in ("from", "to"):
            value = d.get(side) or []
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise DumpFormatError(
                    str(op.path),
                    f"graph '{op.key}': '{side}' of edge definition '{d['collection']}' is not a list of names",
                    line=op.line,
                )
            ends.append(tuple(value))
        defs.append(EdgeDefinition(d["collection"], ends[0], ends[1]))
    orphans = doc.get("orphanCollections") or []
    if not isinstance(orphans, list) or not all(isinstance(o, str) for o in orphans):
        raise DumpFormatError(str(op.path), f"graph '{op.key}': orphanCollections is not a list of names",
                              line=op.line)
    return GraphInfo(name=op.key, edge_definitions=tuple(defs), orphan_collections=tuple(orphans))  # type: ignore[arg-type]



def graph_document(graph: GraphInfo) -> dict:
    """The `_graphs` document of `graph`, as arangodump writes it."""
    return {
        "_key": graph.name,
        "edgeDefinitions": [
            {"collection": d.collection, "from": list(d.from_collections), "to": list(d.to_collections)}
            for d in graph.edge_definitions
        ],
        "orphanCollections": list(graph.orphan_collections),
    }
