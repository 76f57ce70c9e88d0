"""What an ArangoDB database holds: collections (the state collection hidden), named
graphs, and indexes made from the definitions arangodump writes."""

from __future__ import annotations

from typing import Any, Mapping

from arango import errno as arango_errno

from graphsvc.errors import ArangoError
from graphsvc.store.arango.connection import ArangoConnection
from graphsvc.store.arango.state import STATE_COLLECTION
from graphsvc.store.base import CollectionInfo, CollectionKind, EdgeDefinition, GraphInfo, IndexOutcome
from graphsvc.store.checks import check_new_collection, check_same_kind

_INDEX_TYPES = {
    "persistent": "persistent",
    "hash": "persistent",  # hash and skiplist have been persistent indexes since 3.9
    "skiplist": "persistent",
    "ttl": "ttl",
    "fulltext": "fulltext",
    "geo": "geo",
    "geo1": "geo",  # dumps from before 3.4
    "geo2": "geo",
    "inverted": "inverted",
    "vector": "vector",
    "mdi": "mdi",
    "mdi-prefixed": "mdi-prefixed",
    "zkd": "zkd",
}
# what the server reports about an index but does not accept when creating one
_READ_ONLY_INDEX_ATTRIBUTES = (
    "id", "selectivityEstimate", "figures", "isBuilding", "progress", "isNewlyCreated",
    "code", "error", "trainingState", "errorMessage",
)


def index_fields(definition: Mapping[str, Any]) -> tuple[str, ...]:
    """The attribute paths of a definition (inverted indexes list objects with `name`)."""
    names = []
    for item in definition.get("fields") or ():
        names.append(str(item.get("name", "")) if isinstance(item, Mapping) else str(item))
    return tuple(names)


def index_request(collection: str, definition: Mapping[str, Any]) -> dict | IndexOutcome:
    """The body for `POST /_api/index` made from an index definition as arangodump
    writes it, or the outcome straight away when nothing is to be sent (primary and
    edge indexes exist already; unknown types are skipped)."""
    index_type = str(definition.get("type", ""))
    fields = index_fields(definition)
    if index_type in ("primary", "edge"):
        return IndexOutcome(collection, index_type, fields, "exists")
    if index_type not in _INDEX_TYPES:
        return IndexOutcome(
            collection, index_type, fields, "skipped", f"ArangoDB has no '{index_type}' index type"
        )
    if not fields:
        return IndexOutcome(collection, index_type, fields, "skipped", "the definition names no fields")
    body = {k: v for k, v in definition.items() if k not in _READ_ONLY_INDEX_ATTRIBUTES}
    body["type"] = _INDEX_TYPES[index_type]
    return body


# What POST /_api/collection takes from a structure file's `parameters`, as python-arango's
# create_collection arguments (https://docs.arangodb.com/3.12/develop/http-api/collections/#create-a-collection).
# Left out: what the server assigns (id, globallyUniqueId, status, keyOptions.lastValue)
# distributeShardsLike / smartJoinAttribute, which need another collection to exist, and
# cacheEnabled, which python-arango's create_collection does not send.
COLLECTION_PROPERTIES = frozenset({
    "keyOptions", "shardKeys", "numberOfShards", "replicationFactor", "writeConcern", "schema",
    "computedValues", "waitForSync", "shardingStrategy",
})


def collection_arguments(properties: Mapping[str, Any]) -> dict[str, Any]:
    """python-arango `create_collection` keyword arguments from collection properties as
    arangodump writes them; absent or null properties keep the server's defaults."""
    arguments: dict[str, Any] = {}
    key_options = properties.get("keyOptions")
    if isinstance(key_options, Mapping):
        if key_options.get("type"):
            arguments["key_generator"] = str(key_options["type"])
        if key_options.get("allowUserKeys") is not None:
            arguments["user_keys"] = bool(key_options["allowUserKeys"])
        if key_options.get("type") == "autoincrement":
            if key_options.get("increment") is not None:
                arguments["key_increment"] = int(key_options["increment"])
            if key_options.get("offset") is not None:
                arguments["key_offset"] = int(key_options["offset"])
    simple = {
        "shardKeys": "shard_fields", "numberOfShards": "shard_count", "replicationFactor": "replication_factor",
        "writeConcern": "write_concern", "shardingStrategy": "sharding_strategy", "waitForSync": "sync",
        "computedValues": "computedValues",
    }
    for name, argument in simple.items():
        if properties.get(name) is not None:
            arguments[argument] = properties[name]
    if isinstance(properties.get("schema"), Mapping) and properties["schema"]:  # {} and null: no schema
        # only what the create call documents; a dump also holds `type: "json"`, which the server
        # reports and ignores on create (https://docs.arangodb.com/3.12/develop/http-api/collections/#create-a-collection)
        arguments["schema"] = {k: v for k, v in properties["schema"].items() if k in ("rule", "level", "message")}
    return arguments


class ArangoCatalog(ArangoConnection):
    """The port's collections, named graphs and indexes."""

    def collections(self) -> list[CollectionInfo]:
        with self._errors(action="listing collections"):
            listing = self._db.collections()
            infos = []
            for entry in sorted(listing, key=lambda e: e["name"]):
                if entry["system"] or entry["name"] == STATE_COLLECTION:
                    continue
                count = self._db.collection(entry["name"]).count()
                infos.append(CollectionInfo(entry["name"], entry["type"], count))
        return infos

    def has_collection(self, name: str) -> bool:
        if name == STATE_COLLECTION or name.startswith("_"):
            return False
        with self._errors(name):
            return bool(self._db.has_collection(name))

    def collection(self, name: str) -> CollectionInfo:
        kind = self._kind(name)
        with self._errors(name):
            count = self._db.collection(name).count()
        return CollectionInfo(name, kind, count)

    collection_properties = COLLECTION_PROPERTIES

    def create_collection(
        self, name: str, kind: CollectionKind = "document", *, properties: Mapping[str, Any] | None = None
    ) -> CollectionInfo:
        check_new_collection(name, kind)
        with self._errors(name):
            exists = self._db.has_collection(name)
        if not exists:
            arguments = collection_arguments(properties or {})
            try:
                with self._errors(name, action="creating the collection"):
                    self._db.create_collection(name, edge=kind == "edge", **arguments)
                return CollectionInfo(name, kind, 0)
            except ArangoError as exc:
                if exc.error_code != arango_errno.DUPLICATE_NAME:  # another process made it meanwhile
                    raise
        existing = self.collection(name)
        check_same_kind(name, existing.kind, kind)
        return existing

    def drop_collection(self, name: str) -> None:
        with self._errors(name, action="dropping the collection"):
            self._db.delete_collection(name, ignore_missing=True)

    def create_graph(self, graph: GraphInfo) -> None:
        """Through gharial, which creates the collections the graph names that do not
        exist yet (callers that must not create them check first)."""
        definitions = [
            {
                "edge_collection": d.collection,
                "from_vertex_collections": list(d.from_collections),
                "to_vertex_collections": list(d.to_collections),
            }
            for d in graph.edge_definitions
        ]
        with self._errors(action=f"creating graph '{graph.name}'"):
            if not self._db.has_graph(graph.name):
                self._db.create_graph(graph.name, edge_definitions=definitions,
                                      orphan_collections=list(graph.orphan_collections))
                return
            existing = self._db.graph(graph.name)
            current = {d["edge_collection"] for d in existing.edge_definitions()}
            for definition in definitions:
                if definition["edge_collection"] in current:
                    existing.replace_edge_definition(**definition)
                else:
                    existing.create_edge_definition(**definition)
            for stale in sorted(current - {d.collection for d in graph.edge_definitions}):
                existing.delete_edge_definition(stale, purge=False)
            vertex_collections = set(existing.vertex_collections())
            for orphan in graph.orphan_collections:
                if orphan not in vertex_collections:
                    existing.create_vertex_collection(orphan)

    def graphs(self) -> list[GraphInfo]:
        with self._errors(action="listing graphs"):
            listing = self._db.graphs()
        return [
            GraphInfo(
                entry["name"],
                tuple(
                    EdgeDefinition(
                        d["edge_collection"],
                        tuple(d["from_vertex_collections"]),
                        tuple(d["to_vertex_collections"]),
                    )
                    for d in entry["edge_definitions"]
                ),
                tuple(entry.get("orphan_collections") or ()),
            )
            for entry in sorted(listing, key=lambda e: e["name"])
        ]

    def create_index(self, name: str, definition: Mapping[str, Any]) -> IndexOutcome:
        self._kind(name)
        request = index_request(name, definition)
        if isinstance(request, IndexOutcome):
            return request
        asked, fields = str(definition.get("type", "")), index_fields(definition)
        try:
            with self._errors(name, action="creating an index"):
                created = self._db.collection(name).add_index(request)
        except ArangoError as exc:
            if exc.error_code == arango_errno.UNIQUE_CONSTRAINT_VIOLATED:  # 409/1210: the data has duplicates
                return IndexOutcome(
                    name, asked, fields, "failed",
                    f"'{name}' holds documents with the same {', '.join(fields)}, so the unique index cannot be "
                    "built — remove the duplicates and create it again",
                )
            if exc.http_status in (400, 501):  # this server does not take the definition
                return IndexOutcome(name, asked, fields, "skipped", f"ArangoDB refused it: {exc}")
            if exc.http_status == 409:  # e.g. another index of that name with other fields
                return IndexOutcome(name, asked, fields, "failed", f"ArangoDB refused it: {exc}")
            raise
        return IndexOutcome(name, asked, fields, "created" if created.get("isNewlyCreated", True) else "exists")
