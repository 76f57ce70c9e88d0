"""Keys by equality (`select_keys`) and by structured filters (`filter_keys`) in the
embedded store, compiled to SQL with every value a `?` parameter. Comparisons follow
AQL's, made strict about types (see `Condition`), over each place an attribute can live."""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

from graphsvc.errors import StoreError
from graphsvc.store.base import Condition
from graphsvc.store.embedded.connection import EmbeddedConnection
from graphsvc.store.embedded.tables import FLOAT_TYPES, INTEGER_TYPES, attrs_table, docs_table

_RANGE_SQL = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">="}


class EmbeddedFilters(EmbeddedConnection):
    """The port's key selections."""

    def _equals(self, name: str, attribute: str, value: Any) -> tuple[str, list, bool]:
        """A condition true when the attribute's value (the first source that has one)
        equals `value` as JSON values do: 3 == 3.0, "3" != 3."""
        sources = self._sources(name, attribute)
        if not sources:
            return "false", [], False
        if isinstance(value, bool):
            kind, wanted = "BOOLEAN", {"BOOLEAN"}
        elif isinstance(value, (int, float)):
            kind, wanted = "DOUBLE", INTEGER_TYPES | FLOAT_TYPES
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
        source = f"{docs_table(name)} d" + (f" LEFT JOIN {attrs_table(name)} a ON a._key = d._key" if joined else "")
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
        source = f"{docs_table(name)} d" + (f" LEFT JOIN {attrs_table(name)} a ON a._key = d._key" if joined else "")
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
        wanted = {"VARCHAR"} if text else INTEGER_TYPES | FLOAT_TYPES
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
