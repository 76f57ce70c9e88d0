"""The store port and its backends, chosen by URL (`--store` / `GRAPHSVC_STORE`).

- a plain file path, or `duckdb://PATH`: the embedded store in that DuckDB file;
- `arangodb://user@host:8529/db` / `arangodbs://…` (TLS): an ArangoDB database, the
  password from `ARANGO_PASSWORD` or a password file, never from the URL.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

from graphsvc.errors import ConfigError
from graphsvc.store.base import CollectionInfo, EdgeDefinition, GraphInfo, GraphStore

__all__ = ["open_store", "is_server_url", "GraphStore", "CollectionInfo", "EdgeDefinition", "GraphInfo"]

SERVER_SCHEMES = ("arangodb://", "arangodbs://")


def is_server_url(url: str) -> bool:
    """True when `url` names a database server (ArangoDB) rather than an embedded file."""
    return url.lower().startswith(SERVER_SCHEMES)


def open_store(url: str, create: bool = False, password_file: str | os.PathLike | None = None) -> GraphStore:
    """Open the store named by `url`. `create=True` creates an embedded store file, or
    an ArangoDB database, that does not exist yet (jobs that load data); readers get a
    StoreError naming it. `password_file` is read for ArangoDB (`--password-file`)."""
    if not url:
        raise ConfigError("no store given — pass --store PATH or set GRAPHSVC_STORE")
    if is_server_url(url):
        from graphsvc.store.arango import ArangoStore

        return ArangoStore(url, create=create, password_file=password_file)
    if "://" in url and not url.startswith("duckdb://"):
        raise ConfigError(f"unknown store URL scheme in '{url}' — use a file path, duckdb://PATH or arangodb://…")
    from graphsvc.store.embedded import EmbeddedStore

    return EmbeddedStore(url.removeprefix("duckdb://"), create=create)


def require_vector_index(store: GraphStore, *, collection: str = "", without_vector: int = 0,
                         examples: Callable[[], Sequence[str]] | None = None, lacking: str = "") -> GraphStore:
    """`store` when it can hold a vector index for AQL's APPROX_NEAR_COSINE (ArangoDB
    3.12.4 or later); otherwise a ConfigError that says what is there instead. Asked
    before the work: `without_vector` documents of `collection` will get no vector (they
    lack `lacking`), which only a sparse index (3.12.6) tolerates; `examples` names some."""
    create = getattr(store, "create_vector_index", None)
    if create is None:
        raise ConfigError(
            f"--arangodb-vector-index needs an ArangoDB store (arangodb://…), not {store.url}; "
            "the embedded store answers similarity queries from graphsvc's own index"
        )
    if not store.supports_vector_index():
        raise ConfigError(
            f"--arangodb-vector-index needs ArangoDB 3.12.4 or later; {store.url} runs {store.server_version()}"
        )
    if without_vector and not store.supports_sparse_vector_index():
        named = list(examples()[:5]) if examples else []
        raise ConfigError(
            f"{without_vector} documents of '{collection}' have no {lacking} and so get no embedding"
            f"{' (e.g. ' + ', '.join(named) + ')' if named else ''}; ArangoDB {store.server_version()} at {store.url} "
            "has no sparse vector indexes (3.12.6 or later), so its vector index would not build — give them "
            f"{lacking or 'a vector'}, remove them, or upgrade the server (nothing was computed or written)"
        )
    return store
