"""The ArangoDB backend of the store port: a database named by an `arangodb://` or
`arangodbs://` URL, reached through python-arango — connection settings, the AQL texts,
Arrow conversion, and one module per area of the port (catalog, writes, reads, job state)
plus vector indexes, composed into `ArangoStore`."""

from graphsvc.store.arango.store import ArangoStore

__all__ = ["ArangoStore"]
