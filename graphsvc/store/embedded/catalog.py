"""What an embedded store holds: collections (a `docs_` table each), named graphs, and
index definitions, reported as skipped (its queries scan columns)."""

from __future__ import annotations

import json
from typing import Any, Mapping

from graphsvc.store.base import CollectionInfo, CollectionKind, EdgeDefinition, GraphInfo, IndexOutcome
from graphsvc.store.checks import check_new_collection, check_same_kind
from graphsvc.store.embedded.connection import EmbeddedConnection
from graphsvc.store.embedded.tables import EXTRA, REV, attrs_table, docs_table


class EmbeddedCatalog(EmbeddedConnection):
    """The port's collections, named graphs and indexes."""

    def collections(self) -> list[CollectionInfo]:
        rows = self._run("SELECT name, kind FROM _collections ORDER BY name")
        return [CollectionInfo(name, kind, self._count(name)) for name, kind in rows]

    def _count(self, name: str) -> int:
        return self._one(f"SELECT count(*) FROM {docs_table(name)}")[0]

    def collection(self, name: str) -> CollectionInfo:
        kind = self._kind(name)
        return CollectionInfo(name, kind, self._count(name))

    keeps_orphan_collections = False  # `_graphs` holds edge definitions only

    def create_collection(
        self, name: str, kind: CollectionKind = "document", *, properties: Mapping[str, Any] | None = None
    ) -> CollectionInfo:
        """`properties` (key generators, sharding, schema, computed values) are ArangoDB's
        to honour: this store keeps none of them (`collection_properties` is empty)."""
        check_new_collection(name, kind)
        row = self._one("SELECT kind FROM _collections WHERE name = ?", [name])
        if row is not None:
            check_same_kind(name, row[0], kind)
            return self.collection(name)
        with self._transaction():
            self._run(
                f"CREATE TABLE {docs_table(name)} (_key VARCHAR NOT NULL, _from VARCHAR, _to VARCHAR,"
                f" {REV} BIGINT NOT NULL, {EXTRA} JSON)"
            )
            self._create_key_index(f"docs_{name}")
            self._run("INSERT INTO _collections (name, kind) VALUES (?, ?)", [name, kind])
        self._columns[f"docs_{name}"] = {
            "_key": "VARCHAR", "_from": "VARCHAR", "_to": "VARCHAR", REV: "BIGINT", EXTRA: "JSON",
        }
        self._columns[f"attrs_{name}"] = {}
        self._kinds[name] = kind
        self._empty.add(name)
        return CollectionInfo(name, kind, 0)

    def drop_collection(self, name: str) -> None:
        with self._transaction():
            self._run(f"DROP TABLE IF EXISTS {docs_table(name)}")
            self._run(f"DROP TABLE IF EXISTS {attrs_table(name)}")
            self._run("DELETE FROM _collections WHERE name = ?", [name])
            self._run("DELETE FROM _overflow WHERE collection = ?", [name])
        self._columns.pop(f"docs_{name}", None)
        self._columns.pop(f"attrs_{name}", None)
        self._kinds.pop(name, None)
        self._empty.discard(name)

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
