"""The store port: what jobs and the service need from a graph store.

The data model is ArangoDB's everywhere: collections of JSON documents with `_key`,
edge collections whose documents also carry `_from`/`_to` (`Collection/key`), and named
graphs (edge definitions). Bulk data moves as Arrow: pulls yield record batches, and
attribute write-back takes an Arrow table keyed by `_key`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Literal, Mapping, Sequence

import pyarrow as pa

CollectionKind = Literal["document", "edge"]

# arangodump / ArangoDB collection type numbers
ARANGO_TYPE_DOCUMENT = 2
ARANGO_TYPE_EDGE = 3


#: a half-open range of document keys [low, high) in the store's order of keys; None
#: leaves that end open. `GraphStore.key_ranges` splits a collection into such ranges.
KeyRange = tuple["str | None", "str | None"]


def ranges_between(bounds: Sequence[str]) -> list[KeyRange]:
    """The ranges a sorted list of distinct keys cuts the key space into: open below the
    first bound and above the last, so every key falls in exactly one range."""
    edges: list[str | None] = [None, *bounds, None]
    return list(zip(edges[:-1], edges[1:]))


@dataclass(frozen=True)
class StoreAddress:
    """How another process (a Ray worker) opens the same store: the URL `open_store`
    takes and the ArangoDB password file (a path every worker sees; without one, the
    worker's ARANGO_PASSWORD or GRAPHSVC_ARANGO_PASSWORD_FILE). `coordinators`: how many
    servers answer it, which bounds how many readers or writers it gets at once."""

    url: str
    password_file: str | None = None
    coordinators: int = 1

    def open(self, *, read_only: bool = True) -> "GraphStore":
        """The store, opened in this process. The embedded store (one writer per file)
        is opened read-only unless asked: any number of processes may read a DuckDB
        file at once while none writes it."""
        from graphsvc.store import is_server_url, open_store

        if is_server_url(self.url):
            from graphsvc.settings import ARANGO_PASSWORD_FILE, read

            return open_store(self.url, password_file=self.password_file or read(ARANGO_PASSWORD_FILE))
        from graphsvc.store.embedded import EmbeddedStore

        return EmbeddedStore(self.url.removeprefix("duckdb://"), create=False, read_only=read_only)


#: comparison operators of structured filters (`Condition.op`)
FILTER_OPERATORS = ("eq", "ne", "lt", "lte", "gt", "gte", "in")


@dataclass(frozen=True)
class Condition:
    """One structured filter condition on a top-level attribute, e.g.
    `Condition("price", "lt", 20)`. Semantics are AQL's, made strict about types:
    `eq`/`ne`/`in` compare as JSON values (3 == 3.0, "3" != 3; `ne` also matches a
    missing attribute); the ranges `lt`/`lte`/`gt`/`gte` match only values of the same
    type as the bound (numbers with numbers, strings with strings), never a missing one.
    Values are data, never query text: backends bind them as parameters."""

    attribute: str
    op: str
    value: Any


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    kind: CollectionKind
    count: int = 0


@dataclass(frozen=True)
class EdgeDefinition:
    collection: str
    from_collections: tuple[str, ...]
    to_collections: tuple[str, ...]


@dataclass(frozen=True)
class GraphInfo:
    name: str
    edge_definitions: tuple[EdgeDefinition, ...] = field(default_factory=tuple)
    # vertex collections in no edge definition (gharial's `orphanCollections`)
    orphan_collections: tuple[str, ...] = ()

    @property
    def collection_names(self) -> tuple[str, ...]:
        """Every collection the graph names, each once, in order."""
        names: dict[str, None] = {}
        for d in self.edge_definitions:
            names.update(dict.fromkeys((d.collection, *d.from_collections, *d.to_collections)))
        names.update(dict.fromkeys(self.orphan_collections))
        return tuple(names)


@dataclass(frozen=True)
class IndexOutcome:
    """What became of an index definition (from a dump's structure file, or asked for)."""

    collection: str
    type: str
    fields: tuple[str, ...]
    status: Literal["created", "exists", "skipped", "failed"]  # failed: the server could not build it
    reason: str = ""


@dataclass(frozen=True)
class DanglingEdges:
    """Edges whose `_from` or `_to` names a document that does not exist."""

    collection: str
    count: int
    examples: tuple[dict, ...] = ()


class GraphStore(ABC):
    """A graph store backend. Open one with `graphsvc.store.open_store(url)`."""

    url: str

    # -- collections -------------------------------------------------------------
    @abstractmethod
    def collections(self) -> list[CollectionInfo]:
        """All user collections with their document counts."""

    @abstractmethod
    def collection(self, name: str) -> CollectionInfo:
        """Raises CollectionNotFound."""

    def has_collection(self, name: str) -> bool:
        return any(c.name == name for c in self.collections())

    #: whether named graphs keep their orphan collections (vertex collections in no edge definition)
    keeps_orphan_collections: bool = True
    #: the collection properties (`parameters` of an arangodump structure file) this
    #: backend keeps when `create_collection` gets them; the others are ignored
    collection_properties: frozenset[str] = frozenset()

    @abstractmethod
    def create_collection(
        self, name: str, kind: CollectionKind = "document", *, properties: Mapping[str, Any] | None = None
    ) -> CollectionInfo:
        """Create the collection if absent; an existing one of another kind raises StoreError.
        `properties`: ArangoDB collection properties (keyOptions, shardKeys, schema, …) as a
        structure file holds them, for a new collection; those not in
        `collection_properties` are ignored, and an existing collection keeps its own."""

    @abstractmethod
    def drop_collection(self, name: str) -> None:
        """Drop the collection and its documents; no error when absent."""

    # -- named graphs ------------------------------------------------------------
    @abstractmethod
    def create_graph(self, graph: GraphInfo) -> None:
        """Create or replace a named graph definition."""

    @abstractmethod
    def graphs(self) -> list[GraphInfo]:
        ...

    # -- writes ------------------------------------------------------------------
    @abstractmethod
    def upsert_documents(self, name: str, documents: Iterable[Mapping[str, Any]]) -> int:
        """Insert or replace whole documents by `_key` (like arangorestore / import
        `on_duplicate="replace"`), in bulk: one transaction on the embedded store, import
        chunks on ArangoDB (each all-or-nothing on a single server). Edge documents need
        `_from` and `_to`. Returns the number written. Raises StoreError on bad documents
        without writing any of them."""

    @abstractmethod
    def upsert_table(
        self, name: str, table: pa.Table, state: tuple[str, dict] | None = None, *, checked: bool = False
    ) -> int:
        """Insert or replace documents given as an Arrow table: a `_key` column (plus
        `_from`/`_to` for edges) and one column per top-level attribute; null means
        "attribute absent". Keys repeated within the table: the last row wins. When
        `state` is given, `put_state(*state)` happens with the write — atomically where
        the backend has transactions (embedded), right after it otherwise (ArangoDB;
        upserts are idempotent, so replaying a batch after a crash is harmless).
        `checked=True`: the caller already applied `store.checks` (keys and edge ends
        valid, no key repeated, no `_id`/`_rev`), as the dump reader does in its own
        thread, and the store writes without checking again. Returns the rows written."""

    @abstractmethod
    def remove_documents(self, name: str, keys: Sequence[str]) -> int:
        """Remove documents by key; returns how many existed."""

    @abstractmethod
    def update_attributes(self, name: str, table: pa.Table) -> int:
        """Merge the columns of `table` (a `_key` column plus one column per attribute)
        into the documents with those keys (one transaction on the embedded store, one
        UPDATE per chunk on ArangoDB). A null clears that attribute of that document (on
        ArangoDB `keepNull: false` removes it), so a row of nulls is a write too. Keys that
        do not exist raise DocumentNotFound and nothing is written. Returns the number of
        documents written."""

    # -- reads -------------------------------------------------------------------
    @abstractmethod
    def pull(
        self,
        name: str,
        attributes: Mapping[str, pa.DataType],
        batch_size: int = 65_536,
    ) -> Iterator[pa.RecordBatch]:
        """Stream `_key` plus the given attributes (cast to the given Arrow types;
        missing attributes are null), in the store's order: stable from one pull to the
        next while nothing is written."""

    @abstractmethod
    def pull_edges(self, name: str, batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
        """Stream `_from` and `_to` of an edge collection as strings."""

    @abstractmethod
    def key_ranges(self, name: str, parts: int) -> list[KeyRange]:
        """At most `parts` contiguous key ranges that together hold every document of the
        collection once (the first open below, the last open above), of similar
        document counts as the store's own ordering of keys cuts them: a read task per
        range (`pull_range`). One range (None, None) for `parts` <= 1 or too few keys.
        Embedded: exact quantiles of the keys; ArangoDB: quantiles of a sample of the
        keys, sorted by the server."""

    @abstractmethod
    def pull_range(
        self,
        name: str,
        attributes: Mapping[str, pa.DataType],
        key_range: KeyRange,
        batch_size: int = 65_536,
    ) -> Iterator[pa.RecordBatch]:
        """As `pull`, for the documents whose keys are in `key_range`, in key order."""

    @abstractmethod
    def pull_edges_range(self, name: str, key_range: KeyRange, batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
        """As `pull_edges`, for the edges whose own keys are in `key_range`, in key order."""

    def address(self) -> StoreAddress | None:
        """How another process opens this store (`StoreAddress.open`); None when none can
        (an in-memory store, a store over a test transport)."""
        return None

    @abstractmethod
    def get_documents(self, name: str, keys: Sequence[str], *, attributes: Sequence[str] | None = None
                      ) -> list[dict[str, Any] | None]:
        """Documents in the order of `keys`; None where a key does not exist. With
        `attributes`, each holds only those (and its system attributes)."""

    @abstractmethod
    def select_keys(self, name: str, equals: Mapping[str, Any] | None = None) -> list[str]:
        """Keys of the documents whose attributes equal the given values (all when empty)."""

    def filter_keys(self, name: str, conditions: Sequence[Condition]) -> list[str]:
        """Keys of the documents matching all `conditions` (all keys when empty), in no
        particular order. Backends compile the conditions to parameterised queries."""
        from graphsvc.errors import StoreError

        raise StoreError(f"{type(self).__name__} does not support structured filters")

    @abstractmethod
    def change_marker(self, name: str) -> int:
        """A number that grows whenever a document of the collection is written."""

    def pull_revisions(self, name: str, batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
        """Stream `_key` and `_rev` (strings): a document's revision changes whenever the
        document is replaced or updated. Incremental jobs compare it with the revision
        they saw after their own write-back, to find documents someone else rewrote (a
        replace drops the attributes a job wrote back). Embedded: the revision of the
        stored document (write-backs keep their own); ArangoDB: `_rev`."""
        raise NotImplementedError(f"{type(self).__name__} keeps no document revisions")

    # -- indexes -----------------------------------------------------------------
    @abstractmethod
    def create_index(self, name: str, definition: Mapping[str, Any]) -> IndexOutcome:
        """Create an index from an ArangoDB index definition (`type`, `fields`, …) where
        the backend supports it; otherwise report it as skipped with the reason. The
        primary and edge indexes always exist and report "exists"."""

    # -- checks --------------------------------------------------------------------
    @abstractmethod
    def dangling_edges(self, name: str, examples: int = 3) -> DanglingEdges:
        """Count the edges of `name` whose `_from` or `_to` document does not exist
        (a missing collection counts as missing documents)."""

    # -- job state -------------------------------------------------------------------
    @abstractmethod
    def get_state(self, key: str) -> dict | None:
        """Small JSON state kept by jobs in the store itself (restore progress, last run)."""

    @abstractmethod
    def put_state(self, key: str, value: dict) -> None:
        ...

    @abstractmethod
    def delete_state(self, key: str) -> None:
        ...

    def release(self) -> None:  # noqa: B027 - optional hook: a store with nothing to let go of keeps this
        """Let go of what other processes may need until the next call (a job calls this
        after its pull, before minutes of computing). Calls after it reconnect as needed."""

    def close(self) -> None:  # noqa: B027 - optional hook: a store with nothing to close keeps this
        pass

    def __enter__(self) -> "GraphStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
