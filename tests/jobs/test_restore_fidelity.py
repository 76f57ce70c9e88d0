"""Restores as faithful as arangorestore's (issue 13, point 10): collection properties
passed on, orphan collections kept, no graph that would create collections the
selection left out, and a unique index the data breaks reported as failed — on ArangoDB
through the request harness, and on the embedded store for real."""

import json
from pathlib import Path

from graphsvc.store.base import EdgeDefinition, GraphInfo
from graphsvc.store.dumps import open_dump, write_dump
from graphsvc.store.embedded import EmbeddedStore
from jobs.restore_dumps import restore_dumps
from tests.store.arango.harness import error_body
from tests.store.arango.routes_restore import RestoreServer

PROPERTIES = {
    "keyOptions": {"type": "autoincrement", "allowUserKeys": False, "increment": 5, "offset": 10, "lastValue": 95},
    "shardKeys": ["sku"], "numberOfShards": 3, "replicationFactor": 2, "writeConcern": 2,
    "schema": {"rule": {"type": "object", "required": ["sku"]}, "level": "moderate", "message": "needs a sku",
               "type": "json"},
    "computedValues": [{"name": "label", "expression": "RETURN UPPER(@doc.sku)", "overwrite": True,
                        "computeOn": ["insert"], "keepNull": True, "failOnWarning": False}],
}
UNIQUE_SKU = {"id": "products/7", "type": "persistent", "fields": ["sku"], "unique": True, "sparse": False,
              "name": "by_sku"}
GRAPH = GraphInfo("shop", (EdgeDefinition("bought", ("products",), ("products",)),), orphan_collections=("users",))


def _dump(tmp_path: Path) -> Path:
    """products (with properties and a unique index), users, bought, and the graph `shop`."""
    products = [{"_key": "p1", "sku": "A"}, {"_key": "p2", "sku": "A"}]
    dump = write_dump(tmp_path / "dump", "shop", [
        ("products", "document", products),
        ("users", "document", [{"_key": "u1"}]),
        ("bought", "edge", [{"_key": "e1", "_from": "products/p1", "_to": "products/p2"}]),
    ], graphs=[GRAPH])
    structure = next(dump.glob("products_*.structure.json"))
    content = json.loads(structure.read_text())
    content["parameters"].update(PROPERTIES)
    content["indexes"].append(UNIQUE_SKU)
    structure.write_text(json.dumps(content))
    return dump


def test_the_structure_files_collection_properties_are_read(tmp_path):
    products = open_dump(_dump(tmp_path)).collection("products")
    assert products.properties["keyOptions"]["type"] == "autoincrement"
    assert products.properties["shardKeys"] == ["sku"] and products.properties["name"] == "products"


def test_arangodb_gets_the_collection_properties_the_orphans_and_a_failed_unique_index(tmp_path):
    rest = RestoreServer(index_answer=lambda r: error_body(409, 1210, "unique constraint violated - in index by_sku"))
    store = rest.server.store()
    summary = restore_dumps(store, [_dump(tmp_path)])
    created = {r.body["name"]: r.body for r in rest.server.sent("post", "/_api/collection")}
    products = created["products"]
    assert products["keyOptions"] == {"type": "autoincrement", "allowUserKeys": False, "increment": 5, "offset": 10}
    assert (products["shardKeys"], products["numberOfShards"], products["replicationFactor"],
            products["writeConcern"]) == (["sku"], 3, 2, 2)
    # the schema's documented attributes; its "type": "json" the server only reports (collections/#create-a-collection)
    assert products["schema"] == {"rule": {"type": "object", "required": ["sku"]}, "level": "moderate",
                                  "message": "needs a sku"}
    assert products["computedValues"] == PROPERTIES["computedValues"]
    assert created["bought"]["type"] == 3 and "schema" not in created["users"]
    [graph] = rest.server.sent("post", "/_api/gharial")
    assert graph.body["orphanCollections"] == ["users"]
    assert graph.body["edgeDefinitions"] == [{"collection": "bought", "from": ["products"], "to": ["products"]}]
    [index] = rest.server.sent("post", "/_api/index")
    assert index.params["collection"] == "products" and index.body["unique"] is True
    row = next(r for r in summary.collections if r.collection == "products")
    [outcome] = [i for i in row.indexes if i["type"] == "persistent"]
    assert outcome["status"] == "failed" and "duplicates" in outcome["reason"] and "sku" in outcome["reason"]
    assert summary.graphs == ["shop"] and not any("not kept" in w for w in summary.warnings)


def test_arangodb_gets_no_graph_that_would_create_collections_the_selection_left_out(tmp_path):
    rest = RestoreServer()
    summary = restore_dumps(rest.server.store(), [_dump(tmp_path)], exclude=["bought", "users"])
    assert rest.server.sent("post", "/_api/gharial") == []
    assert set(rest.collections) - {"graphsvc_state"} == {"products"}
    assert summary.graphs == []
    [warning] = [w for w in summary.warnings if "graph 'shop'" in w]
    assert "bought, users" in warning and "left out" in warning


def test_the_embedded_store_says_what_it_does_not_keep_and_skips_graphs_missing_left_out_collections(tmp_path):
    dump = _dump(tmp_path)
    with EmbeddedStore(tmp_path / "s.duckdb", create=True) as store:
        summary = restore_dumps(store, [dump], exclude=["bought"])
        assert store.graphs() == [] and not store.has_collection("bought")
        assert any("graph 'shop' not created" in w and "bought" in w for w in summary.warnings)
        [kept] = [w for w in summary.warnings if w.startswith("products: collection properties not kept")]
        assert all(p in kept for p in ("keyOptions", "schema", "computedValues", "shardKeys"))
        assert not any(w.startswith("users: collection properties") for w in summary.warnings)
        # the whole dump: the graph is created, its orphan collection named as not kept
        summary = restore_dumps(store, [dump], overwrite=True)
        assert [g.name for g in store.graphs()] == ["shop"]
        assert any("keeps no orphan collections (users)" in w for w in summary.warnings)
