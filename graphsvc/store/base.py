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

    @abstractmethod
    def create_collection(self, name: str, kind: CollectionKind = "document") -> CollectionInfo:
        """Create the collection if absent; an existing one of another kind raises StoreError."""

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
        `on_duplicate="replace"`), in bulk, in one transaction. Edge documents need
        `_from` and `_to`. Returns the number written. Raises StoreError on bad documents
        without writing any of them."""

    @abstractmethod
    def remove_documents(self, name: str, keys: Sequence[str]) -> int:
        """Remove documents by key; returns how many existed."""

    @abstractmethod
    def update_attributes(self, name: str, table: pa.Table) -> int:
        """Merge the columns of `table` (a `_key` column plus one column per attribute)
        into the documents with those keys, in one transaction. Keys that do not exist
        raise DocumentNotFound and nothing is written. Returns the number updated."""

    # -- reads -------------------------------------------------------------------
    @abstractmethod
    def pull(
        self,
        name: str,
        attributes: Mapping[str, pa.DataType],
        batch_size: int = 65_536,
    ) -> Iterator[pa.RecordBatch]:
        """Stream `_key` plus the given attributes (cast to the given Arrow types;
        missing attributes are null), ordered by `_key`."""

    @abstractmethod
    def pull_edges(self, name: str, batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
        """Stream `_from` and `_to` of an edge collection as strings."""

    @abstractmethod
    def get_documents(self, name: str, keys: Sequence[str]) -> list[dict[str, Any] | None]:
        """Documents in the order of `keys`; None where a key does not exist."""

    @abstractmethod
    def select_keys(self, name: str, equals: Mapping[str, Any] | None = None) -> list[str]:
        """Keys of the documents whose attributes equal the given values (all when empty)."""

    @abstractmethod
    def change_marker(self, name: str) -> int:
        """A number that grows whenever a document of the collection is written."""

    def close(self) -> None:
        pass

    def __enter__(self) -> "GraphStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
