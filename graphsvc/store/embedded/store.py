"""`EmbeddedStore`: the store port on one DuckDB file.

The class is composed of mixins, one per area (catalog, writes, reads, filters, job
state), all built on `EmbeddedConnection`: every part needs the same connection, the same
transactions and the same cached table layout, and the port's methods stay methods of
one object, as jobs and the service call them.
"""

from __future__ import annotations

from graphsvc.store.base import GraphStore
from graphsvc.store.embedded.catalog import EmbeddedCatalog
from graphsvc.store.embedded.filters import EmbeddedFilters
from graphsvc.store.embedded.reads import EmbeddedReads
from graphsvc.store.embedded.writes import EmbeddedWrites


class EmbeddedStore(EmbeddedCatalog, EmbeddedWrites, EmbeddedReads, EmbeddedFilters, GraphStore):
    """A graph store in one DuckDB file (or in memory for ':memory:')."""
