"""The embedded default store: ArangoDB's data model on DuckDB, in one file.

Documents are stored column by column so that bulk moves are Arrow in, Arrow out, with
no JSON text on the hot paths:

- `docs_<collection>`: `_key`, `_from`, `_to`, `__rev`, `__extra` and one typed column
  per top-level attribute, added as attributes appear. A value whose type does not fit
  its attribute's column (a string where numbers were, a differently shaped object)
  goes to `__extra` (JSON) for that document instead.
- `attrs_<collection>`: attributes written back by jobs (`update_attributes`), keyed by
  `_key`. Keeping them apart means a write-back never rewrites the restored documents;
  readers see the written value over the restored one.

Both tables carry an ART index on `_key` (`<table>__key`): a lookup of a few keys
(`get_documents`, what the service's `fields=` reads) probes it instead of scanning, ~2 ms
at 2.45M documents against ~300 ms for the scan, and loads with it measured no slower
(its upserts' deletes probe it too). DuckDB refuses to change a column's type under an
index, so a widening drops and rebuilds it. Upsert = delete those keys + insert, in one
transaction; the file lock makes this process the only writer.
"""

from __future__ import annotations

import json
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from graphsvc.errors import CollectionNotFound, DocumentNotFound, StoreError
from graphsvc.store.base import (
    CollectionInfo,
    CollectionKind,
    Condition,
    DanglingEdges,
    EdgeDefinition,
    GraphInfo,
    GraphStore,
    IndexOutcome,
)
from graphsvc.store.checks import check_edge_ends, check_keys, keep_last_rows

_RANGE_SQL = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">="}

# ArangoDB's rule for collection names
_COLLECTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,255}$")
_SYSTEM = ("_key", "_id", "_rev", "_from", "_to")
_REV, _EXTRA = "__rev", "__extra"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS _collections (name VARCHAR PRIMARY KEY, kind VARCHAR NOT NULL,
                                          last_rev BIGINT NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS _graphs (name VARCHAR PRIMARY KEY, edge_definitions JSON NOT NULL);
CREATE TABLE IF NOT EXISTS _overflow (collection VARCHAR, attribute VARCHAR, PRIMARY KEY (collection, attribute));
CREATE TABLE IF NOT EXISTS _state (key VARCHAR PRIMARY KEY, value JSON NOT NULL);
CREATE SEQUENCE IF NOT EXISTS _rev_seq START 1;
CREATE SEQUENCE IF NOT EXISTS _key_seq START 1;
"""

#: how long a writer waits for readers (a `graphsvc serve` holding the file) to let go
LOCK_WAIT_S = float(os.environ.get("GRAPHSVC_STORE_LOCK_WAIT", "30"))

_INTEGER_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "HUGEINT"}
_FLOAT_TYPES = {"FLOAT", "DOUBLE"}


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _docs(name: str) -> str:
    return _quote(f"docs_{name}")


def _attrs(name: str) -> str:
    return _quote(f"attrs_{name}")


def _key_index(table: str) -> str:
    """The name of `table`'s `_key` index (index names are global in a DuckDB schema)."""
    return _quote(f"{table}__key")


def _json_path(attribute: str) -> str:
    return '$."' + attribute.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _widened(existing: str, incoming: str) -> str | None:
    """The column type that holds both, when that loses nothing (numbers, lists of
    numbers); None when the types really differ."""
    if existing == incoming:
        return existing
    if existing.endswith("[]") and incoming.endswith("[]"):
        inner = _widened(existing[:-2], incoming[:-2])
        return f"{inner}[]" if inner else None
    numeric = _INTEGER_TYPES | _FLOAT_TYPES
    if existing in numeric and incoming in numeric:
        if existing in _INTEGER_TYPES and incoming in _INTEGER_TYPES:
            return "BIGINT"
        return "DOUBLE"
    return None


def _arrow_to_sql(arrow_type: pa.DataType) -> str | None:
    """The DuckDB type a pull casts to, for the Arrow types pulls ask for."""
    if pa.types.is_float32(arrow_type):
        return "FLOAT"
    if pa.types.is_floating(arrow_type):
        return "DOUBLE"
    if pa.types.is_integer(arrow_type):
        return "BIGINT"
    if pa.types.is_boolean(arrow_type):
        return "BOOLEAN"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "VARCHAR"
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type) or pa.types.is_fixed_size_list(arrow_type):
        inner = _arrow_to_sql(arrow_type.value_type)
        return f"{inner}[]" if inner else None
    return None


def _shortest_floats(array: pa.Array) -> pa.Array:
    """float32 → float64 through their shortest decimal text, so 0.1f reads as 0.1."""
    if pa.types.is_float32(array.type):
        return pc.cast(pc.cast(array, pa.string()), pa.float64())
    if pa.types.is_list(array.type):
        values = _shortest_floats(array.values)
        return pa.ListArray.from_arrays(array.offsets, values, mask=array.is_null())
    if pa.types.is_struct(array.type):
        fields = [array.type.field(i).name for i in range(array.type.num_fields)]
        return pa.StructArray.from_arrays(
            [_shortest_floats(array.field(i)) for i in range(len(fields))], names=fields, mask=array.is_null()
        )
    return array


class EmbeddedStore(GraphStore):
    """A graph store in one DuckDB file (or in memory for ':memory:')."""

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
        self._writer_mark = None if read_only or self.path is None else writer_mark(self.path)
        self._read_only = read_only
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._released = False
        self._open_connection()
        self._columns: dict[str, dict[str, str]] = {}
        self._kinds: dict[str, CollectionKind] = {}
        self._empty: set[str] = set()  # collections created by this connection and not written yet

    def _open_connection(self) -> None:
        self._conn = self._connect(self._read_only)
        # Bulk writes of embeddings are float data that compresses little; writing it
        # uncompressed makes write-back ~1.4x faster. The memory limit keeps a job's
        # store within bounds (DuckDB's default is 80% of RAM): with 3GB a restore of the
        # ogbn-products catalogue peaks at 3.5 GB RSS (4.4 GB with 4GB), and was no slower.
        self._run(f"SET memory_limit = '{os.environ.get('GRAPHSVC_EMBEDDED_MEMORY_LIMIT', '3GB')}'")
        if not self._read_only:
            self._run("SET force_compression = 'uncompressed'")
            # bulk loads checkpoint when the connection closes rather than every 16 MB of WAL
            self._run("SET checkpoint_threshold = '1GB'")
            self._run(_SCHEMA)
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
        self._release_writer_mark()

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
        self._run(f"CREATE INDEX IF NOT EXISTS {_key_index(table)} ON {_quote(table)} (_key)")

    def _set_column_type(self, table: str, column: str, sql_type: str) -> None:
        # DuckDB cannot alter a column's type while the table has an index
        self._run(f"DROP INDEX IF EXISTS {_key_index(table)}")
        self._run(f"ALTER TABLE {_quote(table)} ALTER {column} SET DATA TYPE {sql_type}")
        self._create_key_index(table)

    def _connect(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        """DuckDB lets one process write a file or many read it. A writer announces itself
        in `<file>.writer` (its pid) for as long as it holds the file, so that a service
        holding the file read-only lets go, and waits up to GRAPHSVC_STORE_LOCK_WAIT
        seconds for that."""
        if self._writer_mark is not None:
            self._writer_mark.write_text(str(os.getpid()))
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                return duckdb.connect(self.url, read_only=read_only)
            except duckdb.Error as exc:
                message = str(exc).splitlines()[0]
                # another process's lock, or this process's own read-only connection
                held = "lock" in message.lower() or "different configuration" in message
                if held and self._writer_mark is not None and time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                self._release_writer_mark()
                if held and self._writer_mark is not None:
                    message += (f" — waited {LOCK_WAIT_S:.0f} s for it (GRAPHSVC_STORE_LOCK_WAIT); "
                                "stop the process that holds it (e.g. graphsvc serve --hold-store) and rerun")
                raise StoreError(f"cannot open store {self.url}: {message}") from None

    def _release_writer_mark(self) -> None:
        try:
            if self._writer_mark is not None and self._writer_mark.read_text() == str(os.getpid()):
                self._writer_mark.unlink()
        except OSError:
            pass

    # -- SQL helpers ---------------------------------------------------------------
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
        return {c: t for c, t in self._table_columns(table).items() if c not in ("_key", "_from", "_to", _REV, _EXTRA)}

    def _kind(self, name: str) -> CollectionKind:
        # cached: this connection is the store's only writer (DuckDB's file lock)
        if name not in self._kinds:
            row = self._one("SELECT kind FROM _collections WHERE name = ?", [name])
            if row is None:
                raise CollectionNotFound(name, self.url)
            self._kinds[name] = row[0]
        return self._kinds[name]

    def _next_rev(self) -> int:
        return self._one("SELECT nextval('_rev_seq')")[0]

    def _bump(self, name: str, rev: int) -> None:
        self._run("UPDATE _collections SET last_rev = ? WHERE name = ?", [rev, name])

    def _overflowing(self, name: str) -> set[str]:
        return {r[0] for r in self._run("SELECT attribute FROM _overflow WHERE collection = ?", [name])}

    # -- collections -------------------------------------------------------------------
    def collections(self) -> list[CollectionInfo]:
        rows = self._run("SELECT name, kind FROM _collections ORDER BY name")
        return [CollectionInfo(name, kind, self._count(name)) for name, kind in rows]

    def _count(self, name: str) -> int:
        return self._one(f"SELECT count(*) FROM {_docs(name)}")[0]

    def collection(self, name: str) -> CollectionInfo:
        kind = self._kind(name)
        return CollectionInfo(name, kind, self._count(name))

    def create_collection(self, name: str, kind: CollectionKind = "document") -> CollectionInfo:
        if not _COLLECTION_NAME.match(name):
            raise StoreError(f"invalid collection name '{name}'")
        if kind not in ("document", "edge"):
            raise StoreError(f"invalid collection kind '{kind}' for '{name}'")
        row = self._one("SELECT kind FROM _collections WHERE name = ?", [name])
        if row is not None:
            if row[0] != kind:
                raise StoreError(f"collection '{name}' exists as a {row[0]} collection, not {kind}")
            return self.collection(name)
        with self._transaction():
            self._run(
                f"CREATE TABLE {_docs(name)} (_key VARCHAR NOT NULL, _from VARCHAR, _to VARCHAR,"
                f" {_REV} BIGINT NOT NULL, {_EXTRA} JSON)"
            )
            self._create_key_index(f"docs_{name}")
            self._run("INSERT INTO _collections (name, kind) VALUES (?, ?)", [name, kind])
        self._columns[f"docs_{name}"] = {
            "_key": "VARCHAR", "_from": "VARCHAR", "_to": "VARCHAR", _REV: "BIGINT", _EXTRA: "JSON",
        }
        self._columns[f"attrs_{name}"] = {}
        self._kinds[name] = kind
        self._empty.add(name)
        return CollectionInfo(name, kind, 0)

    def drop_collection(self, name: str) -> None:
        with self._transaction():
            self._run(f"DROP TABLE IF EXISTS {_docs(name)}")
            self._run(f"DROP TABLE IF EXISTS {_attrs(name)}")
            self._run("DELETE FROM _collections WHERE name = ?", [name])
            self._run("DELETE FROM _overflow WHERE collection = ?", [name])
        self._columns.pop(f"docs_{name}", None)
        self._columns.pop(f"attrs_{name}", None)
        self._kinds.pop(name, None)
        self._empty.discard(name)

    # -- graphs ------------------------------------------------------------------------
    def create_graph(self, graph: GraphInfo) -> None:
        definitions = [
            {"collection": d.collection, "from": list(d.from_collections), "to": list(d.to_collections)}
            for d in graph.edge_definitions
        ]
        self._run("INSERT OR REPLACE INTO _graphs VALUES (?, ?)", [graph.name, json.dumps(definitions)])

    def graphs(self) -> list[GraphInfo]:
        rows = self._run("SELECT name, edge_definitions FROM _graphs ORDER BY name")
        return [
            GraphInfo(
                name,
                tuple(EdgeDefinition(d["collection"], tuple(d["from"]), tuple(d["to"])) for d in json.loads(defs)),
            )
            for name, defs in rows
        ]

    # -- writes ------------------------------------------------------------------------
    def upsert_documents(self, name: str, documents: Iterable[Mapping[str, Any]]) -> int:
        rows = []
        for position, document in enumerate(documents):
            if not isinstance(document, Mapping):
                raise StoreError(f"{name}: document {position} is not an object")
            rows.append(document)
        if not rows:
            self._kind(name)
            return 0
        table, json_columns = _documents_to_arrow(rows)
        return self._upsert(name, table, json_columns, None)

    def upsert_table(
        self, name: str, table: pa.Table, state: tuple[str, dict] | None = None, *, checked: bool = False
    ) -> int:
        return self._upsert(name, table, set(), state, checked)

    def _upsert(
        self, name: str, table: pa.Table, json_columns: set[str], state: tuple[str, dict] | None, checked: bool = False
    ) -> int:
        kind = self._kind(name)
        if not checked:
            table = self._checked(name, kind, table)
        if table.num_rows == 0:
            if state:
                self.put_state(*state)
            return 0
        docs_table = f"docs_{name}"
        with self._registered("_incoming", table), self._transaction():
            incoming_types = dict(
                (row[0], row[1]) for row in self._run("DESCRIBE SELECT * FROM _incoming")
            )
            columns = dict(self._attribute_columns(docs_table))
            select = ["_key", *(end if end in incoming_types else "NULL" for end in ("_from", "_to"))]
            targets = ["_key", "_from", "_to"]
            overflow: dict[str, str] = {}  # attribute → SQL of its JSON value
            for attribute, sql_type in incoming_types.items():
                if attribute in ("_key", "_from", "_to") or sql_type in ('"NULL"', "NULL"):
                    continue  # a column of nulls: the attribute is absent everywhere
                column = _quote(attribute)
                if attribute in json_columns:
                    overflow[attribute] = f"json({column})"
                    continue
                existing = columns.get(attribute)
                if existing is None and not attribute.startswith("__"):
                    self._run(f"ALTER TABLE {_docs(name)} ADD COLUMN {column} {sql_type}")
                    columns[attribute] = existing = sql_type
                wider = _widened(existing, sql_type) if existing else None
                if wider is None:
                    overflow[attribute] = column
                    continue
                if wider != existing:
                    self._set_column_type(docs_table, column, wider)
                    columns[attribute] = existing = wider
                select.append(f"CAST({column} AS {existing})" if existing != sql_type else column)
                targets.append(column)
            before = self._attribute_columns(docs_table)
            if columns != before:  # ALTERed: the table now has these columns
                system = {c: t for c, t in self._table_columns(docs_table).items() if c not in before}
                self._columns[docs_table] = {**system, **columns}
            rev = self._next_rev()
            select.append(str(rev))
            targets.append(_REV)
            if overflow:
                pairs = ", ".join(f"'{_sql_string(a)}', {sql}" for a, sql in overflow.items())
                # merge_patch drops the nulls: an absent attribute is not an explicit null
                select.append(f"NULLIF(json_merge_patch('{{}}', json_object({pairs})), '{{}}')")
                targets.append(_EXTRA)
                for attribute in overflow:
                    self._run("INSERT OR IGNORE INTO _overflow VALUES (?, ?)", [name, attribute])
            if name not in self._empty:  # nothing to replace in a collection just created
                self._run(f"DELETE FROM {_docs(name)} WHERE _key IN (SELECT _key FROM _incoming)")
            if self._table_columns(f"attrs_{name}"):
                self._run(f"DELETE FROM {_attrs(name)} WHERE _key IN (SELECT _key FROM _incoming)")
            self._run(
                f"INSERT INTO {_docs(name)} ({', '.join(targets)}) SELECT {', '.join(select)} FROM _incoming"
            )
            self._empty.discard(name)
            self._bump(name, rev)
            if state:
                self._put_state(*state)
        return table.num_rows

    def _checked(self, name: str, kind: CollectionKind, table: pa.Table) -> pa.Table:
        """Validate keys and edge ends, drop _id/_rev, give missing keys, keep the last
        row of a repeated key."""
        if "_key" not in table.column_names:
            keys = self._new_keys(table.num_rows)
            table = table.append_column("_key", keys)
        table = table.drop_columns([c for c in ("_id", "_rev") if c in table.column_names])
        keys = table.column("_key")
        if keys.null_count and (pa.types.is_string(keys.type) or pa.types.is_null(keys.type)):
            generated = self._new_keys(keys.null_count)
            filled = np.array(keys.to_pylist(), dtype=object)
            filled[np.flatnonzero(pc.is_null(keys).to_numpy(zero_copy_only=False))] = generated.to_pylist()
            table = table.set_column(table.column_names.index("_key"), "_key", pa.array(filled, pa.string()))
        check_keys(name, table.column("_key"))
        if kind == "edge":
            check_edge_ends(name, table)
        return keep_last_rows(table)

    def _new_keys(self, count: int) -> pa.Array:
        start = self._one("SELECT nextval('_key_seq')")[0]
        if count > 1:
            self._run(f"SELECT nextval('_key_seq') FROM range({count - 1})")
        return pa.array([str(k) for k in range(start, start + count)], pa.string())

    def remove_documents(self, name: str, keys: Sequence[str]) -> int:
        self._kind(name)
        if not keys:
            return 0
        removed = pa.table({"_key": pa.array(list(keys), pa.string())})
        with self._registered("_removed", removed), self._transaction():
            existing = self._one(
                f"SELECT count(*) FROM {_docs(name)} WHERE _key IN (SELECT _key FROM _removed)"
            )[0]
            self._run(f"DELETE FROM {_docs(name)} WHERE _key IN (SELECT _key FROM _removed)")
            if self._table_columns(f"attrs_{name}"):
                self._run(f"DELETE FROM {_attrs(name)} WHERE _key IN (SELECT _key FROM _removed)")
            self._bump(name, self._next_rev())
        return existing

    def update_attributes(self, name: str, table: pa.Table) -> int:
        self._kind(name)
        if "_key" not in table.column_names:
            raise StoreError(f"{name}: write-back table has no _key column")
        attributes = [c for c in table.column_names if c != "_key"]
        bad = [a for a in attributes if a in _SYSTEM or a.startswith("__")]
        if bad:
            raise StoreError(f"{name}: cannot write attribute(s) {', '.join(bad)}")
        if table.num_rows == 0 or not attributes:
            return 0
        table = keep_last_rows(table)
        attrs_table = f"attrs_{name}"
        with self._registered("_updates", table), self._transaction():
            missing = self._one(
                f"SELECT u._key FROM _updates u ANTI JOIN {_docs(name)} d ON d._key = u._key LIMIT 1"
            )
            if missing is not None:
                raise DocumentNotFound(name, missing[0])
            rev = self._next_rev()
            incoming = {r[0]: r[1] for r in self._run("DESCRIBE SELECT * FROM _updates")}
            existing = self._attribute_columns(attrs_table)
            if not self._table_columns(attrs_table):
                chosen = ", ".join(_quote(a) for a in attributes)
                self._run(f"CREATE TABLE {_attrs(name)} AS "
                          f"SELECT _key, {rev}::BIGINT AS {_REV}, {chosen} FROM _updates")
                self._create_key_index(attrs_table)
            else:
                for attribute in attributes:
                    column = _quote(attribute)
                    if attribute not in existing:
                        self._run(f"ALTER TABLE {_attrs(name)} ADD COLUMN {column} {incoming[attribute]}")
                    elif existing[attribute] != incoming[attribute]:
                        wider = _widened(existing[attribute], incoming[attribute])
                        if wider is None:
                            raise StoreError(
                                f"{name}: attribute '{attribute}' was written as {existing[attribute]}, "
                                f"now as {incoming[attribute]}"
                            )
                        if wider != existing[attribute]:
                            self._set_column_type(attrs_table, column, wider)
                self._columns.pop(attrs_table, None)
                self._merge_attributes(name, attributes, rev, table.num_rows)
            self._columns.pop(attrs_table, None)
            self._bump(name, rev)
        return table.num_rows

    def _merge_attributes(self, name: str, attributes: list[str], rev: int, count: int) -> None:
        """Fold `_updates` into attrs_<name>: replaced when the update rewrites all of it
        (a full re-embedding), rebuilt in one pass when it covers most of it, updated in
        place when it is a small share."""
        columns = list(self._attribute_columns(f"attrs_{name}"))
        size = self._one(f"SELECT count(*) FROM {_attrs(name)}")[0]
        rebuilt = _quote(f"attrs_{name}__new")
        replaces_everything = set(columns) <= set(attributes) and not self._one(
            f"SELECT 1 FROM {_attrs(name)} a ANTI JOIN _updates u ON a._key = u._key LIMIT 1"
        )
        if replaces_everything:  # a full re-embedding: nothing of the old table survives
            chosen = ", ".join(_quote(a) for a in attributes)
            self._run(f"CREATE TABLE {rebuilt} AS SELECT _key, {rev}::BIGINT AS {_REV}, {chosen} FROM _updates")
        elif count * 2 >= size:
            # the updated rows, then the rows the update leaves alone (a union rather than
            # a full outer join with a CASE per column: nothing is chosen row by row)
            fresh = ", ".join(f"u.{_quote(c)}" if c in attributes else f"a.{_quote(c)}" for c in columns)
            joined = "" if set(columns) <= set(attributes) else f" LEFT JOIN {_attrs(name)} a ON a._key = u._key"
            kept = ", ".join(f"a.{_quote(c)}" for c in columns)
            self._run(
                f"CREATE TABLE {rebuilt} AS SELECT u._key, {rev}::BIGINT AS {_REV}, {fresh} FROM _updates u{joined} "
                f"UNION ALL SELECT a._key, a.{_REV}, {kept} FROM {_attrs(name)} a "
                "ANTI JOIN _updates u ON a._key = u._key"
            )
        else:
            assignments = ", ".join(f"{_quote(a)} = u.{_quote(a)}" for a in attributes)
            self._run(
                f"UPDATE {_attrs(name)} AS a SET {assignments}, {_REV} = {rev} FROM _updates u WHERE a._key = u._key"
            )
            chosen = ", ".join(_quote(a) for a in attributes)
            self._run(
                f"INSERT INTO {_attrs(name)} (_key, {_REV}, {chosen}) SELECT u._key, {rev}, {chosen} "
                f"FROM _updates u ANTI JOIN {_attrs(name)} a ON a._key = u._key"
            )
            return
        self._run(f"DROP TABLE {_attrs(name)}")
        self._run(f"ALTER TABLE {rebuilt} RENAME TO {_quote(f'attrs_{name}')}")
        self._create_key_index(f"attrs_{name}")

    # -- reads -------------------------------------------------------------------------
    def _sources(self, name: str, attribute: str) -> list[tuple[str, str]]:
        """Where an attribute can live, first wins: (SQL, type) for the written-back
        column, the document column and the overflow JSON (type "JSON")."""
        sources = []
        written = self._attribute_columns(f"attrs_{name}")
        if attribute in written:
            sources.append((f"a.{_quote(attribute)}", written[attribute]))
        stored = self._attribute_columns(f"docs_{name}")
        if attribute in stored:
            sources.append((f"d.{_quote(attribute)}", stored[attribute]))
        if attribute in self._overflowing(name):
            sources.append((f"json_extract(d.{_EXTRA}, '{_sql_string(_json_path(attribute))}')", "JSON"))
        return sources

    def _attribute_expression(self, name: str, attribute: str, sql_type: str | None) -> tuple[str, bool]:
        """One attribute as a value of `sql_type` (None: as stored); and whether the
        query needs the written-back attributes joined."""
        sources = self._sources(name, attribute)
        if not sources:
            return f"NULL::{sql_type or 'VARCHAR'}", False
        typed = []
        for sql, stored in sources:
            if stored == "JSON" and sql_type == "VARCHAR":
                typed.append(f"({sql} ->> '$')")
            elif sql_type:
                typed.append(f"TRY_CAST({sql} AS {sql_type})")
            else:
                typed.append(sql if stored != "JSON" else f"CAST({sql} AS VARCHAR)")
        expression = typed[0] if len(typed) == 1 else f"COALESCE({', '.join(typed)})"
        return expression, any(sql.startswith("a.") for sql, _ in sources)

    def _equals(self, name: str, attribute: str, value: Any) -> tuple[str, list, bool]:
        """A condition true when the attribute's value (the first source that has one)
        equals `value` as JSON values do: 3 == 3.0, "3" != 3."""
        sources = self._sources(name, attribute)
        if not sources:
            return "false", [], False
        if isinstance(value, bool):
            kind, wanted = "BOOLEAN", {"BOOLEAN"}
        elif isinstance(value, (int, float)):
            kind, wanted = "DOUBLE", _INTEGER_TYPES | _FLOAT_TYPES
        elif isinstance(value, str):
            kind, wanted = "VARCHAR", {"VARCHAR"}
        else:
            kind, wanted = "JSON", set()
        json_types = {"BOOLEAN": "('BOOLEAN')", "DOUBLE": "('BIGINT', 'UBIGINT', 'DOUBLE')", "VARCHAR": "('VARCHAR')"}
        branches, params = [], []
        for sql, stored in sources:
            if stored == "JSON":
                if kind == "JSON":
                    test = f"{sql} = ?::JSON"
                elif kind == "VARCHAR":
                    test = f"(json_type({sql}) = 'VARCHAR' AND ({sql} ->> '$') = ?)"
                else:
                    test = f"(json_type({sql}) IN {json_types[kind]} AND TRY_CAST({sql} AS {kind}) = ?)"
            elif stored in wanted:
                test = f"{sql} = ?"
            elif kind == "JSON" and (stored.endswith("[]") or stored.startswith("STRUCT")):
                test = f"to_json({sql}) = ?::JSON"
            else:
                test = "false"
            if "?" in test:
                params.append(json.dumps(value) if kind == "JSON" else value)
            branches.append(f"WHEN {sql} IS NOT NULL THEN {test}")
        return f"(CASE {' '.join(branches)} ELSE false END)", params, any(sql.startswith("a.") for sql, _ in sources)

    def pull(
        self,
        name: str,
        attributes: Mapping[str, pa.DataType],
        batch_size: int = 65_536,
    ) -> Iterator[pa.RecordBatch]:
        self._kind(name)
        columns, joined = ["d._key"], False
        for attribute, arrow_type in attributes.items():
            expression, needs_join = self._attribute_expression(name, attribute, _arrow_to_sql(arrow_type))
            columns.append(f"{expression} AS {_quote(attribute)}")
            joined = joined or needs_join
        source = f"{_docs(name)} d" + (f" LEFT JOIN {_attrs(name)} a ON a._key = d._key" if joined else "")
        schema = pa.schema([("_key", pa.string())] + [(a, t) for a, t in attributes.items()])
        return self._stream(f"SELECT {', '.join(columns)} FROM {source}", [], batch_size, schema)

    def pull_edges(self, name: str, batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
        if self._kind(name) != "edge":
            raise StoreError(f"collection '{name}' is not an edge collection")
        schema = pa.schema([("_from", pa.string()), ("_to", pa.string())])
        return self._stream(f"SELECT _from, _to FROM {_docs(name)}", [], batch_size, schema)

    def _stream(self, sql: str, params: list, batch_size: int, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
        # a cursor of its own, so that the caller may write while it reads
        cursor = self._db.cursor()
        reader = cursor.sql(sql, params=params).to_arrow_reader(batch_size)

        def batches():
            try:
                for batch in reader:
                    yield pa.RecordBatch.from_arrays(
                        [batch.column(i).cast(schema.field(i).type) for i in range(batch.num_columns)],
                        schema=schema,
                    )
            finally:
                cursor.close()

        return batches()

    def pull_revisions(self, name: str, batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
        self._kind(name)
        schema = pa.schema([("_key", pa.string()), ("_rev", pa.string())])
        return self._stream(f"SELECT _key, CAST({_REV} AS VARCHAR) FROM {_docs(name)}", [], batch_size, schema)

    def get_documents(
        self, name: str, keys: Sequence[str], *, attributes: Sequence[str] | None = None
    ) -> list[dict[str, Any] | None]:
        """`attributes`: only these (and the system attributes) in each document. The
        service's `fields=` asks for a few scalars; reading whole rows also reads their
        vectors, ~4 KB per row spread over several blocks (at 2.45M documents ~3x slower)."""
        self._kind(name)
        if not keys:
            return []
        has_attrs = bool(self._table_columns(f"attrs_{name}"))
        written = list(self._attribute_columns(f"attrs_{name}")) if has_attrs else []
        stored = ["*"]
        if attributes is not None:
            wanted = set(attributes)
            written = [c for c in written if c in wanted]
            stored = ["_key", "_from", "_to", _REV, _EXTRA] + [
                _quote(c) for c in self._attribute_columns(f"docs_{name}") if c in wanted]
        select = ["d.*"] + ([f"a.{_REV} AS __written_rev"]
                            + [f"a.{_quote(c)} AS {_quote('__written_' + c)}" for c in written])
        # each side filtered before joining, so DuckDB probes each table's `_key` index
        # (EXPLAIN ANALYZE: Index Scan, 0 row groups scanned) and reads the other columns
        # of the matching rows only
        source = f"(SELECT {', '.join(stored)} FROM {_docs(name)} WHERE _key = ANY($keys)) d"
        if has_attrs:
            chosen = ", ".join(["_key", _REV] + [_quote(c) for c in written])
            source += f" LEFT JOIN (SELECT {chosen} FROM {_attrs(name)} WHERE _key = ANY($keys)) a ON a._key = d._key"
        result = self._db.sql(
            f"SELECT {', '.join(select) if has_attrs else 'd.*'} FROM {source}", params={"keys": list(keys)}
        ).to_arrow_table()
        columns = {
            field.name: _shortest_floats(result.column(i).combine_chunks()).to_pylist()
            for i, field in enumerate(result.schema)
        }
        found = {}
        for row in range(result.num_rows):
            key = columns["_key"][row]
            rev = columns[_REV][row]
            document: dict[str, Any] = {"_key": key, "_id": f"{name}/{key}"}
            if columns["_from"][row] is not None:
                document["_from"], document["_to"] = columns["_from"][row], columns["_to"][row]
            for column, values in columns.items():
                if column.startswith("_") or values[row] is None:
                    continue
                document[column] = values[row]
            if columns[_EXTRA][row] is not None:
                extra = json.loads(columns[_EXTRA][row])
                document.update(extra if attributes is None else {a: v for a, v in extra.items() if a in wanted})
            if has_attrs and columns["__written_rev"][row] is not None:
                rev = max(rev, columns["__written_rev"][row])
                for column in written:
                    value = columns["__written_" + column][row]
                    if value is not None:
                        document[column] = value
            document["_rev"] = str(rev)
            found[key] = document
        return [found.get(key) for key in keys]

    def select_keys(self, name: str, equals: Mapping[str, Any] | None = None) -> list[str]:
        self._kind(name)
        clauses, params, joined = [], [], False
        for attribute, value in (equals or {}).items():
            if attribute in ("_key", "_from", "_to"):
                clauses.append(f"d.{attribute} = ?")
                params.append(value)
                continue
            condition, extra_params, needs_join = self._equals(name, attribute, value)
            joined = joined or needs_join
            clauses.append(condition)
            params.extend(extra_params)
        source = f"{_docs(name)} d" + (f" LEFT JOIN {_attrs(name)} a ON a._key = d._key" if joined else "")
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        return [r[0] for r in self._run(f"SELECT d._key FROM {source}{where} ORDER BY d._key", params)]

    def filter_keys(self, name: str, conditions: Sequence[Condition]) -> list[str]:
        self._kind(name)
        clauses, params, joined = [], [], False
        for condition in conditions:
            sql, extra_params, needs_join = self._condition(name, condition)
            clauses.append(sql)
            params.extend(extra_params)
            joined = joined or needs_join
        source = f"{_docs(name)} d" + (f" LEFT JOIN {_attrs(name)} a ON a._key = d._key" if joined else "")
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        return [r[0] for r in self._run(f"SELECT d._key FROM {source}{where}", params)]

    def _condition(self, name: str, condition: Condition) -> tuple[str, list, bool]:
        """SQL for one structured condition (values as `?` parameters), its parameters,
        and whether it reads the written-back attributes."""
        attribute, op, value = condition.attribute, condition.op, condition.value
        if op == "eq":
            return self._equals_any(name, attribute, value)
        if op == "ne":
            sql, params, joined = self._equals_any(name, attribute, value)
            return f"(NOT {sql})", params, joined
        if op == "in":
            if not isinstance(value, (list, tuple)):
                raise StoreError(f"filter on '{attribute}': 'in' needs a list of values")
            parts = [self._equals_any(name, attribute, v) for v in value]
            if not parts:
                return "false", [], False
            return (
                "(" + " OR ".join(p[0] for p in parts) + ")",
                [x for p in parts for x in p[1]],
                any(p[2] for p in parts),
            )
        if op in _RANGE_SQL:
            return self._range(name, attribute, _RANGE_SQL[op], value)
        raise StoreError(f"filter on '{attribute}': unknown operator '{op}'")

    def _equals_any(self, name: str, attribute: str, value: Any) -> tuple[str, list, bool]:
        if attribute in ("_key", "_from", "_to"):
            if not isinstance(value, str):
                return "false", [], False
            return f"(d.{attribute} IS NOT DISTINCT FROM ?)", [value], False
        return self._equals(name, attribute, value)

    def _range(self, name: str, attribute: str, sql_op: str, value: Any) -> tuple[str, list, bool]:
        """True when the attribute holds a value of the bound's type (number or string)
        on the right side of it; a missing attribute or another type never matches."""
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise StoreError(f"filter on '{attribute}': a range needs a number or a string, got {value!r}")
        if attribute in ("_key", "_from", "_to"):
            if not isinstance(value, str):
                return "false", [], False
            return f"(d.{attribute} {sql_op} ?)", [value], False
        sources = self._sources(name, attribute)
        if not sources:
            return "false", [], False
        text = isinstance(value, str)
        wanted = {"VARCHAR"} if text else _INTEGER_TYPES | _FLOAT_TYPES
        branches, params = [], []
        for sql, stored in sources:
            if stored == "JSON":
                test = (
                    f"(json_type({sql}) = 'VARCHAR' AND ({sql} ->> '$') {sql_op} ?)" if text
                    else f"(json_type({sql}) IN ('BIGINT', 'UBIGINT', 'DOUBLE') "
                         f"AND TRY_CAST({sql} AS DOUBLE) {sql_op} ?)"
                )
            elif stored in wanted:
                test = f"{sql} {sql_op} ?"
            else:
                test = "false"
            if "?" in test:
                params.append(value if text else float(value))
            branches.append(f"WHEN {sql} IS NOT NULL THEN {test}")
        return f"(CASE {' '.join(branches)} ELSE false END)", params, any(sql.startswith("a.") for sql, _ in sources)

    def change_marker(self, name: str) -> int:
        self._kind(name)
        return self._one("SELECT last_rev FROM _collections WHERE name = ?", [name])[0]

    # -- indexes and checks --------------------------------------------------------------
    def create_index(self, name: str, definition: Mapping[str, Any]) -> IndexOutcome:
        self._kind(name)
        index_type = str(definition.get("type", ""))
        fields = tuple(definition.get("fields") or ())
        if index_type in ("primary", "edge"):
            return IndexOutcome(name, index_type, fields, "exists")
        return IndexOutcome(
            name, index_type, fields, "skipped",
            "the embedded store keeps no secondary indexes (its queries scan columns)",
        )

    def dangling_edges(self, name: str, examples: int = 3) -> DanglingEdges:
        if self._kind(name) != "edge":
            raise StoreError(f"collection '{name}' is not an edge collection")
        targets = [
            r[0] for r in self._run(
                f"SELECT DISTINCT split_part(_from, '/', 1) FROM {_docs(name)} "
                f"UNION SELECT DISTINCT split_part(_to, '/', 1) FROM {_docs(name)}"
            )
        ]
        existing = {c for c in targets if self._one("SELECT 1 FROM _collections WHERE name = ?", [c])}
        known = " UNION ALL ".join(
            f"SELECT '{_sql_string(c)}/' || _key AS id FROM {_docs(c)}" for c in sorted(existing)
        )
        known = known or "SELECT NULL::VARCHAR AS id WHERE false"
        dangling = (
            f"WITH known AS ({known}) SELECT e._key, e._from, e._to FROM {_docs(name)} e "
            "WHERE e._from NOT IN (SELECT id FROM known) OR e._to NOT IN (SELECT id FROM known)"
        )
        # the count and the first examples in one pass (no rows: nothing dangles)
        rows = self._run(
            f"SELECT * FROM (SELECT *, count(*) OVER () AS n FROM ({dangling})) ORDER BY _key LIMIT ?",
            [max(examples, 1)],
        )
        count = rows[0][3] if rows else 0
        return DanglingEdges(name, count, tuple({"_key": k, "_from": f, "_to": t} for k, f, t, _n in rows[:examples]))

    # -- job state -----------------------------------------------------------------------
    def get_state(self, key: str) -> dict | None:
        row = self._one("SELECT value FROM _state WHERE key = ?", [key])
        return json.loads(row[0]) if row else None

    def put_state(self, key: str, value: dict) -> None:
        self._put_state(key, value)

    def _put_state(self, key: str, value: dict) -> None:  # also inside a caller's transaction
        # an UPDATE of the existing row costs a third of INSERT OR REPLACE (a restore writes one per block)
        value_json = json.dumps(value)
        if not self._run("UPDATE _state SET value = ? WHERE key = ?", [value_json, key])[0][0]:
            self._run("INSERT INTO _state VALUES (?, ?)", [key, value_json])

    def delete_state(self, key: str) -> None:
        self._run("DELETE FROM _state WHERE key = ?", [key])

    def close(self) -> None:
        self._released = False
        if getattr(self, "_conn", None) is not None:
            self._conn.close()
            self._conn = None
            self._release_writer_mark()


def writer_mark(path: str | Path) -> Path:
    """The file in which a process writing the store at `path` leaves its pid."""
    return Path(f"{path}.writer")


def active_writer(path: str | Path) -> int | None:
    """The pid of a live process that holds (or waits for) the store at `path` to write."""
    try:
        pid = int(writer_mark(path).read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):  # no mark, a torn one, or its process is gone
        return None
    return pid


def _sql_string(text: str) -> str:
    return text.replace("'", "''")


def _documents_to_arrow(documents: list[Mapping[str, Any]]) -> tuple[pa.Table, set[str]]:
    """Python documents → an Arrow table, one column per attribute. An attribute whose
    values Arrow cannot hold in one type (mixed types, ragged objects) becomes a column
    of JSON text, which the store keeps in the overflow JSON."""
    names: dict[str, None] = {}
    for document in documents:
        for name in document:
            names.setdefault(name, None)
    arrays, json_columns = {}, set()
    for name in names:
        values = [document.get(name) for document in documents]
        if name in ("_key", "_from", "_to"):
            if any(v is not None and not isinstance(v, str) for v in values):
                raise StoreError(f"{name} must be a string in every document")
            arrays[name] = pa.array(values, pa.string())
            continue
        try:
            arrays[name] = pa.array(values)
            if pa.types.is_struct(arrays[name].type) and _ragged(values):
                raise pa.ArrowInvalid("objects with different attributes")
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
            arrays[name] = pa.array([None if v is None else json.dumps(v) for v in values], pa.string())
            json_columns.add(name)
    return pa.table(arrays), json_columns


def _ragged(values: list) -> bool:
    """True when objects differ in their attributes (Arrow would fill the gaps with nulls)."""
    shapes = {tuple(sorted(v)) for v in values if isinstance(v, dict)}
    return len(shapes) > 1
