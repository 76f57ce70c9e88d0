"""The embedded default store: ArangoDB's data model on DuckDB, in one file.

Each collection is a table `(_key PRIMARY KEY, _from, _to, _rev, doc JSON)`; `doc` holds
every attribute except the system ones. Bulk moves go through Arrow in both directions so
that no Python loop runs per document on the hot paths (pulls and write-back).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from graphsvc.errors import CollectionNotFound, DocumentNotFound, StoreError
from graphsvc.store.base import CollectionInfo, CollectionKind, EdgeDefinition, GraphInfo, GraphStore

# ArangoDB's rules: collection names and document keys.
_COLLECTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,255}$")
_DOCUMENT_KEY = re.compile(r"^[A-Za-z0-9_\-:.@()+,=;$!*'%]{1,254}$")
_SYSTEM_ATTRIBUTES = ("_key", "_id", "_rev", "_from", "_to")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS _collections (
    name VARCHAR PRIMARY KEY,
    kind VARCHAR NOT NULL,
    last_rev BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS _graphs (name VARCHAR PRIMARY KEY, edge_definitions JSON NOT NULL);
CREATE SEQUENCE IF NOT EXISTS _rev_seq START 1;
CREATE SEQUENCE IF NOT EXISTS _key_seq START 1;
"""


def _table(name: str) -> str:
    return f'"col_{name}"'


def _json_path(attribute: str) -> str:
    return '$."' + attribute.replace('"', '\\"') + '"'


def _duckdb_type(arrow_type: pa.DataType) -> str | None:
    """The DuckDB cast for an Arrow type, or None to extract the JSON text."""
    if pa.types.is_floating(arrow_type):
        return "DOUBLE" if arrow_type == pa.float64() else "FLOAT"
    if pa.types.is_integer(arrow_type):
        return "BIGINT"
    if pa.types.is_boolean(arrow_type):
        return "BOOLEAN"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "VARCHAR"
    if pa.types.is_list(arrow_type) or pa.types.is_fixed_size_list(arrow_type):
        inner = _duckdb_type(arrow_type.value_type)
        return f"{inner}[]" if inner else None
    return None


class EmbeddedStore(GraphStore):
    """A graph store in one DuckDB file (or in memory for ':memory:')."""

    def __init__(self, path: str | Path, create: bool = True, read_only: bool = False):
        self.path = Path(path) if str(path) != ":memory:" else None
        self.url = str(path)
        if self.path is not None:
            if not self.path.exists():
                if not create:
                    raise StoreError(
                        f"store {self.path} does not exist — create it with 'jobs restore-dumps' "
                        "or point --store / GRAPHSVC_STORE at an existing one"
                    )
                self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            raise StoreError(f"cannot open store {path}: {str(exc).splitlines()[0]}") from None
        if not read_only:
            self._run(_SCHEMA)

    # -- helpers -----------------------------------------------------------------
    def _run(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple]:
        """Execute and drain the result (DuckDB refuses new work while one is pending)."""
        return self._db.execute(sql, params or []).fetchall()

    def _one(self, sql: str, params: Sequence[Any] | None = None) -> tuple | None:
        rows = self._run(sql, params)
        return rows[0] if rows else None

    def _kind(self, name: str) -> CollectionKind:
        row = self._one("SELECT kind FROM _collections WHERE name = ?", [name])
        if row is None:
            raise CollectionNotFound(name, self.url)
        return row[0]

    def _bump(self, name: str) -> None:
        self._run(
            "UPDATE _collections SET last_rev = currval('_rev_seq') WHERE name = ?", [name]
        )

    # -- collections -------------------------------------------------------------
    def collections(self) -> list[CollectionInfo]:
        rows = self._run("SELECT name, kind FROM _collections ORDER BY name")
        return [CollectionInfo(name, kind, self._count(name)) for name, kind in rows]

    def _count(self, name: str) -> int:
        return self._one(f"SELECT count(*) FROM {_table(name)}")[0]

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
        self._run("BEGIN")
        try:
            self._run(
                f"CREATE TABLE {_table(name)} (_key VARCHAR PRIMARY KEY, _from VARCHAR, _to VARCHAR,"
                " _rev BIGINT NOT NULL, doc JSON NOT NULL)"
            )
            self._run("INSERT INTO _collections (name, kind) VALUES (?, ?)", [name, kind])
            self._run("COMMIT")
        except Exception:
            self._run("ROLLBACK")
            raise
        return CollectionInfo(name, kind, 0)

    def drop_collection(self, name: str) -> None:
        self._run("BEGIN")
        self._run(f"DROP TABLE IF EXISTS {_table(name)}")
        self._run("DELETE FROM _collections WHERE name = ?", [name])
        self._run("COMMIT")

    # -- graphs ------------------------------------------------------------------
    def create_graph(self, graph: GraphInfo) -> None:
        definitions = [
            {"collection": d.collection, "from": list(d.from_collections), "to": list(d.to_collections)}
            for d in graph.edge_definitions
        ]
        self._run(
            "INSERT OR REPLACE INTO _graphs VALUES (?, ?)", [graph.name, json.dumps(definitions)]
        )

    def graphs(self) -> list[GraphInfo]:
        rows = self._run("SELECT name, edge_definitions FROM _graphs ORDER BY name")
        return [
            GraphInfo(
                name,
                tuple(
                    EdgeDefinition(d["collection"], tuple(d["from"]), tuple(d["to"]))
                    for d in json.loads(defs)
                ),
            )
            for name, defs in rows
        ]

    # -- writes ------------------------------------------------------------------
    def upsert_documents(self, name: str, documents: Iterable[Mapping[str, Any]]) -> int:
        kind = self._kind(name)
        by_key: dict[str, tuple[str | None, str | None, str]] = {}
        for position, document in enumerate(documents):
            if not isinstance(document, Mapping):
                raise StoreError(f"{name}: document {position} is not an object")
            key = document.get("_key")
            if key is None:
                key = str(self._one("SELECT nextval('_key_seq')")[0])
            elif not isinstance(key, str) or not _DOCUMENT_KEY.match(key):
                raise StoreError(f"{name}: document {position} has an invalid _key {key!r}")
            source, target = document.get("_from"), document.get("_to")
            if kind == "edge":
                for field, value in (("_from", source), ("_to", target)):
                    if not isinstance(value, str) or value.count("/") != 1:
                        raise StoreError(
                            f"{name}: edge {key!r} needs {field} as 'Collection/key', got {value!r}"
                        )
            body = {k: v for k, v in document.items() if k not in _SYSTEM_ATTRIBUTES}
            # a later document with the same key replaces the earlier one, as in ArangoDB
            by_key[key] = (source, target, json.dumps(body, separators=(",", ":")))
        if not by_key:
            return 0
        rows = pa.table(
            {
                "_key": list(by_key.keys()),
                "_from": [v[0] for v in by_key.values()],
                "_to": [v[1] for v in by_key.values()],
                "doc": [v[2] for v in by_key.values()],
            }
        )
        with self._transaction():
            self._db.register("_incoming", rows)
            try:
                self._run(
                    f"INSERT OR REPLACE INTO {_table(name)} "
                    "SELECT _key, _from, _to, nextval('_rev_seq'), doc::JSON FROM _incoming"
                )
            finally:
                self._db.unregister("_incoming")
            self._bump(name)
        return len(by_key)

    def remove_documents(self, name: str, keys: Sequence[str]) -> int:
        self._kind(name)
        if not keys:
            return 0
        with self._transaction():
            self._db.register("_removed", pa.table({"_key": pa.array(list(keys), pa.string())}))
            try:
                existing = self._one(
                    f"SELECT count(*) FROM {_table(name)} WHERE _key IN (SELECT _key FROM _removed)"
                )[0]
                self._run(
                    f"DELETE FROM {_table(name)} WHERE _key IN (SELECT _key FROM _removed)"
                )
            finally:
                self._db.unregister("_removed")
            self._run("SELECT nextval('_rev_seq')")
            self._bump(name)
        return existing

    def update_attributes(self, name: str, table: pa.Table) -> int:
        self._kind(name)
        if "_key" not in table.column_names:
            raise StoreError(f"{name}: write-back table has no _key column")
        attributes = [c for c in table.column_names if c != "_key"]
        bad = [a for a in attributes if a in _SYSTEM_ATTRIBUTES]
        if bad:
            raise StoreError(f"{name}: cannot write system attribute(s) {', '.join(bad)}")
        if table.num_rows == 0 or not attributes:
            return 0
        table = _json_friendly(table)
        pairs = ", ".join(f"'{a.replace(chr(39), chr(39) * 2)}', u.\"{a}\"" for a in attributes)
        with self._transaction():
            self._db.register("_updates", table)
            try:
                missing = self._one(
                    f"SELECT u._key FROM _updates u ANTI JOIN {_table(name)} t ON t._key = u._key LIMIT 1"
                )
                if missing is not None:
                    raise DocumentNotFound(name, missing[0])
                self._run(
                    f"UPDATE {_table(name)} AS t SET doc = json_merge_patch(t.doc, json_object({pairs})),"
                    " _rev = nextval('_rev_seq') FROM _updates u WHERE t._key = u._key"
                )
            finally:
                self._db.unregister("_updates")
            self._bump(name)
        return table.num_rows

    def _transaction(self):
        store = self

        class _Tx:
            def __enter__(self):
                store._run("BEGIN")

            def __exit__(self, exc_type, exc, tb):
                store._run("ROLLBACK" if exc_type else "COMMIT")
                return False

        return _Tx()

    # -- reads -------------------------------------------------------------------
    def pull(
        self,
        name: str,
        attributes: Mapping[str, pa.DataType],
        batch_size: int = 65_536,
    ) -> Iterator[pa.RecordBatch]:
        self._kind(name)
        columns, params = ["_key"], []
        for attribute, arrow_type in attributes.items():
            sql_type = _duckdb_type(arrow_type)
            alias = '"' + attribute.replace('"', '""') + '"'
            if sql_type == "VARCHAR":
                columns.append(f"json_extract_string(doc, ?) AS {alias}")
            elif sql_type is None:
                columns.append(f"CAST(json_extract(doc, ?) AS VARCHAR) AS {alias}")
            else:
                columns.append(f"TRY_CAST(json_extract(doc, ?) AS {sql_type}) AS {alias}")
            params.append(_json_path(attribute))
        schema = pa.schema([("_key", pa.string())] + [(a, t) for a, t in attributes.items()])
        sql = f"SELECT {', '.join(columns)} FROM {_table(name)} ORDER BY _key"
        return self._stream(sql, params, batch_size, schema)

    def pull_edges(self, name: str, batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
        if self._kind(name) != "edge":
            raise StoreError(f"collection '{name}' is not an edge collection")
        schema = pa.schema([("_from", pa.string()), ("_to", pa.string())])
        return self._stream(f"SELECT _from, _to FROM {_table(name)} ORDER BY _key", [], batch_size, schema)

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

    def get_documents(self, name: str, keys: Sequence[str]) -> list[dict[str, Any] | None]:
        self._kind(name)
        if not keys:
            return []
        self._db.register("_wanted", pa.table({"_key": pa.array(list(keys), pa.string())}))
        try:
            rows = self._run(
                f"SELECT t._key, t._from, t._to, t._rev, t.doc FROM {_table(name)} t "
                "WHERE t._key IN (SELECT _key FROM _wanted)"
            )
        finally:
            self._db.unregister("_wanted")
        found = {}
        for key, source, target, rev, doc in rows:
            document = {"_key": key, "_id": f"{name}/{key}", "_rev": str(rev)}
            if source is not None:
                document["_from"], document["_to"] = source, target
            document.update(json.loads(doc))
            found[key] = document
        return [found.get(key) for key in keys]

    def select_keys(self, name: str, equals: Mapping[str, Any] | None = None) -> list[str]:
        self._kind(name)
        clauses, params = [], []
        for attribute, value in (equals or {}).items():
            if attribute in ("_key", "_from", "_to"):
                clauses.append(f'"{attribute}" = ?')
                params.append(value)
            else:
                # compare as JSON values so that 3 matches 3 and "3" matches "3"
                clauses.append("json_extract(doc, ?) = ?::JSON")
                params.extend([_json_path(attribute), json.dumps(value)])
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._run(
            f"SELECT _key FROM {_table(name)}{where} ORDER BY _key", params
        )
        return [r[0] for r in rows]

    def change_marker(self, name: str) -> int:
        self._kind(name)
        return self._one(
            "SELECT last_rev FROM _collections WHERE name = ?", [name]
        )[0]

    def close(self) -> None:
        if getattr(self, "_db", None) is not None:
            self._db.close()
            self._db = None


def _json_friendly(table: pa.Table) -> pa.Table:
    """Float32 values become the nearest short decimal, so the JSON holds 0.1, not 0.10000000149."""
    columns = []
    for column in table.columns:
        columns.append(_round_floats(column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)))
    return pa.table(columns, names=table.column_names)


def _round_floats(array: pa.Array) -> pa.Array:
    if pa.types.is_float32(array.type):
        values = np.round(array.to_numpy(zero_copy_only=False).astype(np.float64), 7)
        return pa.array(values, pa.float64(), mask=array.is_null().to_numpy(zero_copy_only=False))
    if pa.types.is_list(array.type) or pa.types.is_fixed_size_list(array.type):
        if pa.types.is_fixed_size_list(array.type):
            array = array.cast(pa.list_(array.type.value_type))
        offsets = array.offsets
        values = _round_floats(array.values.slice(offsets[0].as_py(), offsets[-1].as_py() - offsets[0].as_py()))
        rebased = pc.subtract(offsets, offsets[0])
        return pa.ListArray.from_arrays(rebased, values, mask=array.is_null())
    if pa.types.is_struct(array.type):
        fields = [array.type.field(i) for i in range(array.type.num_fields)]
        children = [_round_floats(array.field(i)) for i in range(len(fields))]
        return pa.StructArray.from_arrays(
            children, names=[f.name for f in fields], mask=array.is_null()
        )
    return array
