"""The embedded store's tables: ArangoDB's data model on DuckDB, in one file.

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

import pyarrow as pa

REV, EXTRA = "__rev", "__extra"

SCHEMA = """
CREATE TABLE IF NOT EXISTS _collections (name VARCHAR PRIMARY KEY, kind VARCHAR NOT NULL,
                                          last_rev BIGINT NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS _graphs (name VARCHAR PRIMARY KEY, edge_definitions JSON NOT NULL);
CREATE TABLE IF NOT EXISTS _overflow (collection VARCHAR, attribute VARCHAR, PRIMARY KEY (collection, attribute));
CREATE TABLE IF NOT EXISTS _state (key VARCHAR PRIMARY KEY, value JSON NOT NULL);
CREATE SEQUENCE IF NOT EXISTS _rev_seq START 1;
CREATE SEQUENCE IF NOT EXISTS _key_seq START 1;
"""

INTEGER_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "HUGEINT"}
FLOAT_TYPES = {"FLOAT", "DOUBLE"}


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def docs_table(name: str) -> str:
    return quote(f"docs_{name}")


def attrs_table(name: str) -> str:
    return quote(f"attrs_{name}")


def key_index(table: str) -> str:
    """The name of `table`'s `_key` index (index names are global in a DuckDB schema)."""
    return quote(f"{table}__key")


def json_path(attribute: str) -> str:
    return '$."' + attribute.replace("\\", "\\\\").replace('"', '\\"') + '"'


def widened(existing: str, incoming: str) -> str | None:
    """The column type that holds both, when that loses nothing (numbers, lists of
    numbers); None when the types really differ."""
    if existing == incoming:
        return existing
    if existing.endswith("[]") and incoming.endswith("[]"):
        inner = widened(existing[:-2], incoming[:-2])
        return f"{inner}[]" if inner else None
    numeric = INTEGER_TYPES | FLOAT_TYPES
    if existing in numeric and incoming in numeric:
        if existing in INTEGER_TYPES and incoming in INTEGER_TYPES:
            return "BIGINT"
        return "DOUBLE"
    return None


def arrow_to_sql(arrow_type: pa.DataType) -> str | None:
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
        inner = arrow_to_sql(arrow_type.value_type)
        return f"{inner}[]" if inner else None
    return None


def sql_string(text: str) -> str:
    return text.replace("'", "''")
