"""The embedded default backend of the store port: ArangoDB's data model in one DuckDB
file, for one writer or many readers — its tables, the connection and single-writer
lock, and one module per area of the port (catalog, writes, reads, filters, job state),
composed into `EmbeddedStore`."""

from graphsvc.store.embedded.store import EmbeddedStore

__all__ = ["EmbeddedStore"]
