"""Writes to the embedded store: upserts (delete those keys + insert, in one transaction,
widening a column or sending a value to the overflow JSON when its type does not fit),
removals, and attribute write-back into the `attrs_` table."""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from graphsvc.errors import DocumentNotFound, StoreError
from graphsvc.store.base import CollectionKind
from graphsvc.store.checks import SYSTEM_ATTRIBUTES, checked_table, keep_last_rows, objects, write_back_attributes
from graphsvc.store.embedded.state import EmbeddedState
from graphsvc.store.embedded.tables import EXTRA, REV, attrs_table, docs_table, quote, sql_string, widened


class EmbeddedWrites(EmbeddedState):
    """The port's writes; each moves the collection's change marker (`last_rev`)."""

    def _next_rev(self) -> int:
        return self._one("SELECT nextval('_rev_seq')")[0]

    def _bump(self, name: str, rev: int) -> None:
        self._run("UPDATE _collections SET last_rev = ? WHERE name = ?", [rev, name])

    def upsert_documents(self, name: str, documents: Iterable[Mapping[str, Any]]) -> int:
        rows = [document for _, document in objects(name, documents)]
        if not rows:
            self._kind(name)
            return 0
        table, json_columns = documents_to_arrow(rows)
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
        docs_name = f"docs_{name}"
        with self._registered("_incoming", table), self._transaction():
            incoming_types = dict(
                (row[0], row[1]) for row in self._run("DESCRIBE SELECT * FROM _incoming")
            )
            columns = dict(self._attribute_columns(docs_name))
            select = ["_key", *(end if end in incoming_types else "NULL" for end in ("_from", "_to"))]
            targets = ["_key", "_from", "_to"]
            overflow: dict[str, str] = {}  # attribute → SQL of its JSON value
            for attribute, sql_type in incoming_types.items():
                if attribute in ("_key", "_from", "_to") or sql_type in ('"NULL"', "NULL"):
                    continue  # a column of nulls: the attribute is absent everywhere
                column = quote(attribute)
                if attribute in json_columns:
                    overflow[attribute] = f"json({column})"
                    continue
                existing = columns.get(attribute)
                if existing is None and not attribute.startswith("__"):
                    self._run(f"ALTER TABLE {docs_table(name)} ADD COLUMN {column} {sql_type}")
                    columns[attribute] = existing = sql_type
                wider = widened(existing, sql_type) if existing else None
                if wider is None:
                    overflow[attribute] = column
                    continue
                if wider != existing:
                    self._set_column_type(docs_name, column, wider)
                    columns[attribute] = existing = wider
                select.append(f"CAST({column} AS {existing})" if existing != sql_type else column)
                targets.append(column)
            before = self._attribute_columns(docs_name)
            if columns != before:  # ALTERed: the table now has these columns
                system = {c: t for c, t in self._table_columns(docs_name).items() if c not in before}
                self._columns[docs_name] = {**system, **columns}
            rev = self._next_rev()
            select.append(str(rev))
            targets.append(REV)
            if overflow:
                pairs = ", ".join(f"'{sql_string(a)}', {sql}" for a, sql in overflow.items())
                # merge_patch drops the nulls: an absent attribute is not an explicit null
                select.append(f"NULLIF(json_merge_patch('{{}}', json_object({pairs})), '{{}}')")
                targets.append(EXTRA)
                for attribute in overflow:
                    self._run("INSERT OR IGNORE INTO _overflow VALUES (?, ?)", [name, attribute])
            if name not in self._empty:  # nothing to replace in a collection just created
                self._run(f"DELETE FROM {docs_table(name)} WHERE _key IN (SELECT _key FROM _incoming)")
            if self._table_columns(f"attrs_{name}"):
                self._run(f"DELETE FROM {attrs_table(name)} WHERE _key IN (SELECT _key FROM _incoming)")
            self._run(
                f"INSERT INTO {docs_table(name)} ({', '.join(targets)}) SELECT {', '.join(select)} FROM _incoming"
            )
            self._empty.discard(name)
            self._bump(name, rev)
            if state:
                self._put_state(*state)
        return table.num_rows

    def _checked(self, name: str, kind: CollectionKind, table: pa.Table) -> pa.Table:
        """`checked_table` after giving rows without a key one."""
        if "_key" not in table.column_names:
            keys = self._new_keys(table.num_rows)
            table = table.append_column("_key", keys)
        keys = table.column("_key")
        if keys.null_count and (pa.types.is_string(keys.type) or pa.types.is_null(keys.type)):
            generated = self._new_keys(keys.null_count)
            filled = np.array(keys.to_pylist(), dtype=object)
            filled[np.flatnonzero(pc.is_null(keys).to_numpy(zero_copy_only=False))] = generated.to_pylist()
            table = table.set_column(table.column_names.index("_key"), "_key", pa.array(filled, pa.string()))
        return checked_table(name, kind, table)

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
                f"SELECT count(*) FROM {docs_table(name)} WHERE _key IN (SELECT _key FROM _removed)"
            )[0]
            self._run(f"DELETE FROM {docs_table(name)} WHERE _key IN (SELECT _key FROM _removed)")
            if self._table_columns(f"attrs_{name}"):
                self._run(f"DELETE FROM {attrs_table(name)} WHERE _key IN (SELECT _key FROM _removed)")
            self._bump(name, self._next_rev())
        return existing

    def update_attributes(self, name: str, table: pa.Table) -> int:
        """A null clears the attribute of that document (as ArangoDB's UPDATE with
        `keepNull: false` removes it): the restored value underneath goes too, so the
        document reads as having none, on both backends."""
        self._kind(name)
        # `__` names the store's own columns
        attributes = write_back_attributes(name, table, lambda a: a in SYSTEM_ATTRIBUTES or a.startswith("__"))
        if table.num_rows == 0 or not attributes:
            return 0
        table = keep_last_rows(table)
        # a column of nulls only (Arrow type null) has no type to give attrs_: it only clears
        only_nulls = [a for a in attributes if pa.types.is_null(table.column(a).type)]
        typed = [a for a in attributes if a not in only_nulls]
        cleared = only_nulls + [a for a in typed if table.column(a).null_count]
        attrs_name = f"attrs_{name}"
        with self._registered("_updates", table), self._transaction():
            missing = self._one(
                f"SELECT u._key FROM _updates u ANTI JOIN {docs_table(name)} d ON d._key = u._key LIMIT 1"
            )
            if missing is not None:
                raise DocumentNotFound(name, missing[0])
            rev = self._next_rev()
            incoming = {r[0]: r[1] for r in self._run("DESCRIBE SELECT * FROM _updates")}
            existing = self._attribute_columns(attrs_name)
            if not typed:
                pass
            elif not self._table_columns(attrs_name):
                chosen = ", ".join(quote(a) for a in typed)
                self._run(f"CREATE TABLE {attrs_table(name)} AS "
                          f"SELECT _key, {rev}::BIGINT AS {REV}, {chosen} FROM _updates")
                self._create_key_index(attrs_name)
            else:
                for attribute in typed:
                    column = quote(attribute)
                    if attribute not in existing:
                        self._run(f"ALTER TABLE {attrs_table(name)} ADD COLUMN {column} {incoming[attribute]}")
                    elif existing[attribute] != incoming[attribute]:
                        wider = widened(existing[attribute], incoming[attribute])
                        if wider is None:
                            raise StoreError(
                                f"{name}: attribute '{attribute}' was written as {existing[attribute]}, "
                                f"now as {incoming[attribute]}"
                            )
                        if wider != existing[attribute]:
                            self._set_column_type(attrs_name, column, wider)
                self._columns.pop(attrs_name, None)
                self._merge_attributes(name, typed, rev, table.num_rows)
            self._columns.pop(attrs_name, None)
            self._clear_nulls(name, cleared, set(only_nulls), rev)
            self._bump(name, rev)
        return table.num_rows

    def _clear_nulls(self, name: str, cleared: list[str], only_nulls: set[str], rev: int) -> None:
        """The attributes `_updates` sets to null, cleared where else they live: the
        written-back column (for a column of nulls only, which the merge left out), the
        restored document's column and its overflow JSON."""
        written = self._attribute_columns(f"attrs_{name}")
        stored = self._attribute_columns(f"docs_{name}")
        overflowing = self._overflowing(name) if cleared else set()
        for attribute in cleared:
            column = quote(attribute)
            rows = "SELECT _key FROM _updates" + ("" if attribute in only_nulls else f" WHERE {column} IS NULL")
            if attribute in only_nulls and attribute in written:
                self._run(f"UPDATE {attrs_table(name)} SET {column} = NULL, {REV} = {rev} WHERE _key IN ({rows})")
            if attribute in stored:
                self._run(f"UPDATE {docs_table(name)} SET {column} = NULL WHERE _key IN ({rows})")
            if attribute in overflowing:
                # a merge patch with null removes the member
                self._run(
                    f"UPDATE {docs_table(name)} SET {EXTRA} = NULLIF(json_merge_patch({EXTRA}, "
                    f"json_object('{sql_string(attribute)}', NULL)), '{{}}') "
                    f"WHERE {EXTRA} IS NOT NULL AND _key IN ({rows})"
                )

    def _merge_attributes(self, name: str, attributes: list[str], rev: int, count: int) -> None:
        """Fold `_updates` into attrs_<name>: replaced when the update rewrites all of it
        (a full re-embedding), rebuilt in one pass when it covers most of it, updated in
        place when it is a small share."""
        columns = list(self._attribute_columns(f"attrs_{name}"))
        size = self._one(f"SELECT count(*) FROM {attrs_table(name)}")[0]
        rebuilt = quote(f"attrs_{name}__new")
        replaces_everything = set(columns) <= set(attributes) and not self._one(
            f"SELECT 1 FROM {attrs_table(name)} a ANTI JOIN _updates u ON a._key = u._key LIMIT 1"
        )
        if replaces_everything:  # a full re-embedding: nothing of the old table survives
            chosen = ", ".join(quote(a) for a in attributes)
            self._run(f"CREATE TABLE {rebuilt} AS SELECT _key, {rev}::BIGINT AS {REV}, {chosen} FROM _updates")
        elif count * 2 >= size:
            # the updated rows, then the rows the update leaves alone (a union rather than
            # a full outer join with a CASE per column: nothing is chosen row by row)
            fresh = ", ".join(f"u.{quote(c)}" if c in attributes else f"a.{quote(c)}" for c in columns)
            joined = "" if set(columns) <= set(attributes) else f" LEFT JOIN {attrs_table(name)} a ON a._key = u._key"
            kept = ", ".join(f"a.{quote(c)}" for c in columns)
            self._run(
                f"CREATE TABLE {rebuilt} AS SELECT u._key, {rev}::BIGINT AS {REV}, {fresh} FROM _updates u{joined} "
                f"UNION ALL SELECT a._key, a.{REV}, {kept} FROM {attrs_table(name)} a "
                "ANTI JOIN _updates u ON a._key = u._key"
            )
        else:
            assignments = ", ".join(f"{quote(a)} = u.{quote(a)}" for a in attributes)
            self._run(
                f"UPDATE {attrs_table(name)} AS a SET {assignments}, {REV} = {rev} "
                "FROM _updates u WHERE a._key = u._key"
            )
            chosen = ", ".join(quote(a) for a in attributes)
            self._run(
                f"INSERT INTO {attrs_table(name)} (_key, {REV}, {chosen}) SELECT u._key, {rev}, {chosen} "
                f"FROM _updates u ANTI JOIN {attrs_table(name)} a ON a._key = u._key"
            )
            return
        self._run(f"DROP TABLE {attrs_table(name)}")
        self._run(f"ALTER TABLE {rebuilt} RENAME TO {quote(f'attrs_{name}')}")
        self._create_key_index(f"attrs_{name}")


def documents_to_arrow(documents: list[Mapping[str, Any]]) -> tuple[pa.Table, set[str]]:
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
