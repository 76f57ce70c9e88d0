"""The store port and its backends, chosen by URL (`--store` / `GRAPHSVC_STORE`).

- a plain file path, or `duckdb://PATH`: the embedded store in that DuckDB file;
- `arangodb://user@host:8529/db` / `arangodbs://…`: ArangoDB (not available yet).
"""

from __future__ import annotations

from graphsvc.errors import ConfigError
from graphsvc.store.base import CollectionInfo, EdgeDefinition, GraphInfo, GraphStore

__all__ = ["open_store", "GraphStore", "CollectionInfo", "EdgeDefinition", "GraphInfo"]


def open_store(url: str, create: bool = False) -> GraphStore:
    """Open the store named by `url`. `create=True` creates an embedded store file that
    does not exist yet (jobs that load data); readers get a StoreError naming the path."""
    if not url:
        raise ConfigError("no store given — pass --store PATH or set GRAPHSVC_STORE")
    if url.startswith(("arangodb://", "arangodbs://")):
        raise ConfigError(
            f"the ArangoDB backend is not available in this version ({url}); "
            "use the embedded store (a file path) for now"
        )
    if "://" in url and not url.startswith("duckdb://"):
        raise ConfigError(f"unknown store URL scheme in '{url}' — use a file path, duckdb://PATH or arangodb://…")
    from graphsvc.store.embedded import EmbeddedStore

    return EmbeddedStore(url.removeprefix("duckdb://"), create=create)
