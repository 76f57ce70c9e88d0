"""`jobs restore-dumps`: arangodump directories → the store, without `arangorestore`.

Recipe: open each dump (layout and encryption checked) → validate every data line →
create collections → stream batches of upserts/removals → named graphs → summary.
Validation reads the data once before anything is written, so a bad line stops the
restore with nothing stored half-written.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from graphsvc.errors import DumpFormatError
from graphsvc.store.base import GraphStore
from graphsvc.store.dumps import GRAPHS_COLLECTION, Dump, iter_operation_batches, iter_operations, open_dump, read_graphs


@dataclass
class CollectionSummary:
    dump: str
    collection: str
    kind: str
    read: int = 0
    written: int = 0
    removed: int = 0
    status: str = "restored"


@dataclass
class RestoreSummary:
    collections: list[CollectionSummary] = field(default_factory=list)
    graphs: list[str] = field(default_factory=list)
    skipped_system: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "collections": [asdict(c) for c in self.collections],
            "graphs": self.graphs,
            "skipped_system_collections": self.skipped_system,
            "warnings": self.warnings,
        }


def _selected(dump: Dump, include_system: bool, summary: RestoreSummary):
    for collection in dump.collections:
        if collection.is_system and not include_system:
            if collection.name != GRAPHS_COLLECTION:
                summary.skipped_system.append(collection.name)
            continue
        yield collection


def restore_dumps(
    store: GraphStore,
    directories: Sequence[Path],
    batch_size: int = 10_000,
    include_system_collections: bool = False,
    on_progress: Callable[[str, int], None] | None = None,
) -> RestoreSummary:
    summary = RestoreSummary()
    dumps = [open_dump(directory) for directory in directories]
    # a first pass parses every line, so a corrupt file fails before anything is written
    for dump in dumps:
        for collection in dump.collections:
            _validate(collection)

    for dump in dumps:
        for collection in _selected(dump, include_system_collections, summary):
            row = CollectionSummary(str(dump.directory), collection.name, collection.kind)
            summary.collections.append(row)
            store.create_collection(collection.name, collection.kind)
            if not collection.data_files:
                row.status = "empty: no data file"
                summary.warnings.append(
                    f"{collection.name}: no data file in {dump.directory} — created empty"
                )
                continue
            for batch in iter_operation_batches(collection, batch_size):
                row.read += len(batch)
                _apply(store, collection.name, batch, row)
                if on_progress:
                    on_progress(collection.name, len(batch))
        for graph in read_graphs(dump):
            store.create_graph(graph)
            summary.graphs.append(graph.name)
    return summary


def _validate(collection) -> None:
    for operation in iter_operations(collection):
        if collection.kind != "edge" or operation.op != "upsert":
            continue
        for attribute in ("_from", "_to"):
            value = operation.document.get(attribute)
            if not isinstance(value, str) or value.count("/") != 1:
                raise DumpFormatError(
                    str(operation.path), f"edge '{operation.key}' needs {attribute} as 'Collection/key'", operation.line
                )


def _apply(store: GraphStore, name: str, batch, row: CollectionSummary) -> None:
    """Apply a batch in order: consecutive upserts go in bulk, removals between them."""
    pending: list[dict] = []
    for operation in batch:
        if operation.op == "upsert":
            pending.append(operation.document)
            continue
        if pending:
            row.written += store.upsert_documents(name, pending)
            pending = []
        row.removed += store.remove_documents(name, [operation.key])
    if pending:
        row.written += store.upsert_documents(name, pending)
