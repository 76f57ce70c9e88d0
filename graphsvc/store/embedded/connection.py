"""The DuckDB connection behind the embedded store: opened as the file's one writer or as
a reader, let go between a job's phases and opened again on the next call, SQL helpers
(drained results, transactions, Arrow tables registered for a statement), and what this
connection caches about the tables: it is the store's only writer (DuckDB's file lock)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import duckdb
import pyarrow as pa

from graphsvc.errors import CollectionNotFound, StoreError
from graphsvc.settings import EMBEDDED_MEMORY_LIMIT, read
from graphsvc.store.base import CollectionKind, StoreAddress
from graphsvc.store.embedded import writer_lock
from graphsvc.store.embedded.tables import EXTRA, REV, SCHEMA, json_path, key_index, quote, sql_string


class EmbeddedConnection:
    """What every part of the embedded store builds on: `_db`, `_run`, `_one`,
    `_transaction`, `_registered`, the cached table layout and `_kind`."""

    def __init__(self, path: str | Path, create: bool = True, read_only: bool = False):
        self.path = Path(path) if str(path) != ":memory:" else None
        self.url = str(path)
        if self.path is not None and not self.path.exists():
            if not create:
                raise StoreError(
                    f"store {self.path} does not exist — create it with 'jobs restore-dumps' "
                    "or point --store / GRAPHSVC_STORE at an existing one"
                )
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer_mark = None if read_only or self.path is None else writer_lock.writer_mark(self.path)
        self._read_only = read_only
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._released = False
        self._open_connection()
        self._columns: dict[str, dict[str, str]] = {}
        self._kinds: dict[str, CollectionKind] = {}
        self._empty: set[str] = set()  # collections created by this connection and not written yet

    def _open_connection(self) -> None:
        self._conn = writer_lock.connect(self.url, self._read_only, self._writer_mark)
        # Bulk writes of embeddings are float data that compresses little; writing it
        # uncompressed makes write-back ~1.4x faster. The memory limit keeps a job's
        # store within bounds (DuckDB's default is 80% of RAM): with 3GB a restore of the
        # ogbn-products catalogue peaks at 3.5 GB RSS (4.4 GB with 4GB), and was no slower.
        self._run(f"SET memory_limit = '{read(EMBEDDED_MEMORY_LIMIT)}'")
        if not self._read_only:
            self._run("SET force_compression = 'uncompressed'")
            # bulk loads checkpoint when the connection closes rather than every 16 MB of WAL
            self._run("SET checkpoint_threshold = '1GB'")
            self._run(SCHEMA)
            self._index_existing_tables()

    @property
    def _db(self) -> duckdb.DuckDBPyConnection:
        if self._conn is None and self._released:  # released between a job's phases: open again
            self._released = False
            self._columns.clear()  # another process may have written meanwhile
            self._kinds.clear()
            self._open_connection()
        if self._conn is None:
            raise StoreError(f"store {self.url} is closed")
        return self._conn

    def release(self) -> None:
        """Close the file until the next call needs it: a job computing for minutes between
        its pull and its write-back lets `graphsvc serve` read the store meanwhile (DuckDB
        lets one process write a file or many read it). An in-memory store stays open."""
        if self.path is None or self._conn is None:
            return
        self._conn.close()
        self._conn = None
        self._released = True
        writer_lock.release(self._writer_mark)

    def address(self) -> StoreAddress | None:
        """The file, for readers in other processes; none for an in-memory store."""
        return StoreAddress(str(self.path)) if self.path is not None else None

    def _index_existing_tables(self) -> None:
        """Stores written before tables had a key index get theirs once (seconds at
        millions of rows)."""
        tables = [r[0] for r in self._run(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' AND "
            "(starts_with(table_name, 'docs_') OR starts_with(table_name, 'attrs_')) AND table_name NOT IN "
            "(SELECT table_name FROM duckdb_indexes() WHERE index_name = table_name || '__key')"
        )]
        for table in tables:
            self._create_key_index(table)

    def _create_key_index(self, table: str) -> None:
        self._run(f"CREATE INDEX IF NOT EXISTS {key_index(table)} ON {quote(table)} (_key)")

    def _set_column_type(self, table: str, column: str, sql_type: str) -> None:
        # DuckDB cannot alter a column's type while the table has an index
        self._run(f"DROP INDEX IF EXISTS {key_index(table)}")
        self._run(f"ALTER TABLE {quote(table)} ALTER {column} SET DATA TYPE {sql_type}")
        self._create_key_index(table)

    def _run(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple]:
        """Execute and drain the result (DuckDB refuses new work while one is pending)."""
        return self._db.execute(sql, params or []).fetchall()

    def _one(self, sql: str, params: Sequence[Any] | None = None) -> tuple | None:
        rows = self._run(sql, params)
        return rows[0] if rows else None

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._run("BEGIN")
        try:
            yield
        except BaseException:
            self._run("ROLLBACK")
            # what the transaction changed is undone: forget what was cached about it
            self._columns.clear()
            self._kinds.clear()
            self._empty.clear()
            raise
        self._run("COMMIT")

    @contextmanager
    def _registered(self, name: str, table: pa.Table) -> Iterator[None]:
        """`table` visible to SQL as `name` for the duration."""
        self._db.register(name, table)
        try:
            yield
        finally:
            self._db.unregister(name)

    def _table_columns(self, table: str) -> dict[str, str]:
        """Column name → DuckDB type of `docs_x` / `attrs_x` (empty when absent)."""
        if table not in self._columns:
            rows = self._run(
                "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = ? ORDER BY column_index",
                [table],
            )
            self._columns[table] = dict(rows)
        return self._columns[table]

    def _attribute_columns(self, table: str) -> dict[str, str]:
        return {c: t for c, t in self._table_columns(table).items() if c not in ("_key", "_from", "_to", REV, EXTRA)}

    def _kind(self, name: str) -> CollectionKind:
        # cached: this connection is the store's only writer (DuckDB's file lock)
        if name not in self._kinds:
            row = self._one("SELECT kind FROM _collections WHERE name = ?", [name])
            if row is None:
                raise CollectionNotFound(name, self.url)
            self._kinds[name] = row[0]
        return self._kinds[name]

    def _overflowing(self, name: str) -> set[str]:
        return {r[0] for r in self._run("SELECT attribute FROM _overflow WHERE collection = ?", [name])}

    def _sources(self, name: str, attribute: str) -> list[tuple[str, str]]:
        """Where an attribute can live, first wins: (SQL, type) for the written-back
        column, the document column and the overflow JSON (type "JSON")."""
        if attribute in ("_from", "_to"):  # an edge's ends, as ArangoDB's KEEP returns them
            return [(f"d.{attribute}", "VARCHAR")] if attribute in self._table_columns(f"docs_{name}") else []
        sources = []
        written = self._attribute_columns(f"attrs_{name}")
        if attribute in written:
            sources.append((f"a.{quote(attribute)}", written[attribute]))
        stored = self._attribute_columns(f"docs_{name}")
        if attribute in stored:
            sources.append((f"d.{quote(attribute)}", stored[attribute]))
        if attribute in self._overflowing(name):
            sources.append((f"json_extract(d.{EXTRA}, '{sql_string(json_path(attribute))}')", "JSON"))
        return sources

    def close(self) -> None:
        self._released = False
        if getattr(self, "_conn", None) is not None:
            self._conn.close()
            self._conn = None
            writer_lock.release(self._writer_mark)
