"""`ArangoStore`: the store port over python-arango, kept thin.

The class is composed of mixins, one per area (catalog, writes, reads, job state, vector
index), all built on `ArangoConnection`: every part needs the same database handle,
error translation and cursors, and the port's methods stay methods of one object, as jobs
and the service call them. Every AQL text lives in `aql`; every value is a bind
parameter.
"""

from __future__ import annotations

import os
from typing import Mapping

from arango.http import HTTPClient

from graphsvc.store.arango.catalog import ArangoCatalog
from graphsvc.store.arango.reads import ArangoReads
from graphsvc.store.arango.vector_index import ArangoVectorIndex
from graphsvc.store.arango.writes import IMPORT_BATCH_SIZE, ArangoWrites
from graphsvc.store.base import GraphStore


class ArangoStore(ArangoVectorIndex, ArangoCatalog, ArangoWrites, ArangoReads, GraphStore):
    """A graph store in an ArangoDB database, through python-arango."""

    def __init__(
        self,
        url: str,
        create: bool = False,
        password_file: str | os.PathLike | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        import_batch_size: int = IMPORT_BATCH_SIZE,
        http_client: HTTPClient | None = None,
    ):
        """`http_client`: python-arango's transport (default: requests); the tests give
        one that records every request and answers as the server documents."""
        self.import_batch_size = import_batch_size
        super().__init__(url, create, password_file, environ=environ, http_client=http_client)
