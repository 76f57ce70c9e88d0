"""Vector indexes in ArangoDB (3.12.4 or later), so that AQL's APPROX_NEAR_COSINE works
in the database: the server version check and the index itself. Not part of the port."""

from __future__ import annotations

import math
import re

from graphsvc.errors import ArangoError, StoreError
from graphsvc.store.arango.catalog import ArangoCatalog
from graphsvc.store.base import IndexOutcome

VECTOR_INDEX_MIN_VERSION = (3, 12, 4)


def parse_version(text: str) -> tuple[int, int, int]:
    """`"3.12.4"`, `"3.12.4-1"`, `"3.12.5-devel"` → (3, 12, 4) / (3, 12, 5)."""
    match = re.match(r"\s*v?(\d+)\.(\d+)(?:\.(\d+))?", text)
    if match is None:
        raise StoreError(f"cannot read the ArangoDB version '{text}'")
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def supports_vector_index(version: str) -> bool:
    return parse_version(version) >= VECTOR_INDEX_MIN_VERSION


def default_n_lists(document_count: int) -> int:
    """ArangoDB's suggestion for the IVF cell count, 15·√N, never more than N."""
    return max(1, min(document_count, round(15 * math.sqrt(max(document_count, 1)))))


class ArangoVectorIndex(ArangoCatalog):
    """Vector search on the server (ArangoDB >= 3.12.4)."""

    def server_version(self) -> str:
        with self._errors(action="asking the server version"):
            return str(self._db.version())

    def supports_vector_index(self) -> bool:
        return supports_vector_index(self.server_version())

    def create_vector_index(
        self,
        collection: str,
        *,
        dimension: int,
        attribute: str = "embedding",
        metric: str = "cosine",
        n_lists: int | None = None,
    ) -> IndexOutcome:
        """A vector index on `attribute`, so that AQL's APPROX_NEAR_COSINE works in the
        database. Needs ArangoDB 3.12.4 or later (started with --experimental-vector-index
        in 3.12.4, --vector-index later) and the vectors written first: the server trains
        the index on them. `n_lists` defaults to 15·√N."""
        version = self.server_version()
        if not supports_vector_index(version):
            raise StoreError(
                f"ArangoDB {version} at {self._where()} has no vector indexes: APPROX_NEAR_COSINE needs "
                f"{'.'.join(map(str, VECTOR_INDEX_MIN_VERSION))} or later — upgrade the server, "
                "or answer similarity queries with graphsvc's own index"
            )
        if metric not in ("cosine", "l2", "innerProduct"):
            raise StoreError(f"unknown vector index metric '{metric}' (cosine, l2 or innerProduct)")
        if dimension < 1:
            raise StoreError(f"vector index dimension must be positive, got {dimension}")
        count = self.collection(collection).count
        if count == 0:
            raise StoreError(
                f"'{collection}' is empty: write the {attribute} vectors first, "
                "ArangoDB trains the vector index on them"
            )
        body = {
            "type": "vector",
            "name": f"vector_{attribute}",
            "fields": [attribute],
            "params": {"metric": metric, "dimension": dimension, "nLists": n_lists or default_n_lists(count)},
        }
        try:
            with self._errors(collection, action="creating a vector index"):
                created = self._db.collection(collection).add_index(body)
        except ArangoError as exc:
            raise StoreError(
                f"{exc} — is the server started with --experimental-vector-index (3.12.4) / --vector-index, "
                f"and does every '{attribute}' hold {dimension} numbers?"
            ) from exc
        status = "created" if created.get("isNewlyCreated", True) else "exists"
        return IndexOutcome(collection, "vector", (attribute,), status)
