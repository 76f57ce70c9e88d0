"""Reads from the embedded store: pulls streamed as Arrow batches of the requested types
(each attribute from the first place that holds it: written-back column, document
column, overflow JSON), documents by key through the `_key` index, change markers, and
dangling edges."""

from __future__ import annotations

import json
from typing import Any, Iterator, Mapping, Sequence

import pyarrow as pa

from graphsvc.store.base import DanglingEdges, KeyRange, ranges_between
from graphsvc.store.checks import check_edge_collection
from graphsvc.store.embedded.connection import EmbeddedConnection
from graphsvc.store.embedded.tables import EXTRA, REV, arrow_to_sql, attrs_table, docs_table, quote, sql_string
from graphsvc.store.json_values import shortest_floats


class EmbeddedReads(EmbeddedConnection):
    """The port's reads."""

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

    def pull(
        self,
        name: str,
        attributes: Mapping[str, pa.DataType],
        batch_size: int = 65_536,
    ) -> Iterator[pa.RecordBatch]:
        return self._pull(name, attributes, batch_size, (None, None), ordered=False)

    def pull_range(
        self,
        name: str,
        attributes: Mapping[str, pa.DataType],
        key_range: KeyRange,
        batch_size: int = 65_536,
    ) -> Iterator[pa.RecordBatch]:
        return self._pull(name, attributes, batch_size, key_range, ordered=True)

    def _pull(self, name: str, attributes: Mapping[str, pa.DataType], batch_size: int, key_range: KeyRange,
              ordered: bool) -> Iterator[pa.RecordBatch]:
        self._kind(name)
        columns, joined = ["d._key"], False
        for attribute, arrow_type in attributes.items():
            expression, needs_join = self._attribute_expression(name, attribute, arrow_to_sql(arrow_type))
            columns.append(f"{expression} AS {quote(attribute)}")
            joined = joined or needs_join
        source = f"{docs_table(name)} d" + (f" LEFT JOIN {attrs_table(name)} a ON a._key = d._key" if joined else "")
        where, params = _key_range_condition("d._key", key_range)
        schema = pa.schema([("_key", pa.string())] + [(a, t) for a, t in attributes.items()])
        sql = f"SELECT {', '.join(columns)} FROM {source}{where}" + (" ORDER BY d._key" if ordered else "")
        return self._stream(sql, params, batch_size, schema)

    def pull_edges(self, name: str, batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
        check_edge_collection(name, self._kind(name))
        schema = pa.schema([("_from", pa.string()), ("_to", pa.string())])
        return self._stream(f"SELECT _from, _to FROM {docs_table(name)}", [], batch_size, schema)

    def pull_edges_range(self, name: str, key_range: KeyRange, batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
        check_edge_collection(name, self._kind(name))
        schema = pa.schema([("_from", pa.string()), ("_to", pa.string())])
        where, params = _key_range_condition("_key", key_range)
        return self._stream(f"SELECT _from, _to FROM {docs_table(name)}{where} ORDER BY _key", params, batch_size,
                            schema)

    def key_ranges(self, name: str, parts: int) -> list[KeyRange]:
        """Exact quantiles of the keys (one pass over the key column; DuckDB compares
        strings byte by byte, as `pull_range`'s bounds do)."""
        self._kind(name)
        if parts <= 1:
            return [(None, None)]
        # the fractions are numbers of ours, not data: DuckDB wants them constant
        fractions = ", ".join(f"{p / parts:.12f}" for p in range(1, parts))
        row = self._one(f"SELECT quantile_disc(_key, [{fractions}]) FROM {docs_table(name)}")
        bounds = sorted({key for key in (row[0] if row and row[0] else []) if key is not None})
        return ranges_between(bounds)

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
        return self._stream(f"SELECT _key, CAST({REV} AS VARCHAR) FROM {docs_table(name)}", [], batch_size, schema)

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
            stored = ["_key", "_from", "_to", REV, EXTRA] + [
                quote(c) for c in self._attribute_columns(f"docs_{name}") if c in wanted]
        select = ["d.*"] + ([f"a.{REV} AS __written_rev"]
                            + [f"a.{quote(c)} AS {quote('__written_' + c)}" for c in written])
        # each side filtered before joining, so DuckDB probes each table's `_key` index
        # (EXPLAIN ANALYZE: Index Scan, 0 row groups scanned) and reads the other columns
        # of the matching rows only
        source = f"(SELECT {', '.join(stored)} FROM {docs_table(name)} WHERE _key = ANY($keys)) d"
        if has_attrs:
            chosen = ", ".join(["_key", REV] + [quote(c) for c in written])
            source += (f" LEFT JOIN (SELECT {chosen} FROM {attrs_table(name)} WHERE _key = ANY($keys)) a"
                       " ON a._key = d._key")
        result = self._db.sql(
            f"SELECT {', '.join(select) if has_attrs else 'd.*'} FROM {source}", params={"keys": list(keys)}
        ).to_arrow_table()
        columns = {
            field.name: shortest_floats(result.column(i).combine_chunks()).to_pylist()
            for i, field in enumerate(result.schema)
        }
        found = {}
        for row in range(result.num_rows):
            key = columns["_key"][row]
            rev = columns[REV][row]
            document: dict[str, Any] = {"_key": key, "_id": f"{name}/{key}"}
            if columns["_from"][row] is not None:
                document["_from"], document["_to"] = columns["_from"][row], columns["_to"][row]
            for column, values in columns.items():
                if column.startswith("_") or values[row] is None:
                    continue
                document[column] = values[row]
            if columns[EXTRA][row] is not None:
                extra = json.loads(columns[EXTRA][row])
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

    def change_marker(self, name: str) -> int:
        self._kind(name)
        return self._one("SELECT last_rev FROM _collections WHERE name = ?", [name])[0]

    def dangling_edges(self, name: str, examples: int = 3) -> DanglingEdges:
        check_edge_collection(name, self._kind(name))
        targets = [
            r[0] for r in self._run(
                f"SELECT DISTINCT split_part(_from, '/', 1) FROM {docs_table(name)} "
                f"UNION SELECT DISTINCT split_part(_to, '/', 1) FROM {docs_table(name)}"
            )
        ]
        existing = {c for c in targets if self._one("SELECT 1 FROM _collections WHERE name = ?", [c])}
        known = " UNION ALL ".join(
            f"SELECT '{sql_string(c)}/' || _key AS id FROM {docs_table(c)}" for c in sorted(existing)
        )
        known = known or "SELECT NULL::VARCHAR AS id WHERE false"
        dangling = (
            f"WITH known AS ({known}) SELECT e._key, e._from, e._to FROM {docs_table(name)} e "
            "WHERE e._from NOT IN (SELECT id FROM known) OR e._to NOT IN (SELECT id FROM known)"
        )
        # the count and the first examples in one pass (no rows: nothing dangles)
        rows = self._run(
            f"SELECT * FROM (SELECT *, count(*) OVER () AS n FROM ({dangling})) ORDER BY _key LIMIT ?",
            [max(examples, 1)],
        )
        count = rows[0][3] if rows else 0
        return DanglingEdges(name, count, tuple({"_key": k, "_from": f, "_to": t} for k, f, t, _n in rows[:examples]))


def _key_range_condition(column: str, key_range: KeyRange) -> tuple[str, list]:
    """` WHERE low <= column < high` (an open end left out) and its parameters."""
    low, high = key_range
    conditions, params = [], []
    if low is not None:
        conditions.append(f"{column} >= ?")
        params.append(low)
    if high is not None:
        conditions.append(f"{column} < ?")
        params.append(high)
    return (" WHERE " + " AND ".join(conditions) if conditions else ""), params
