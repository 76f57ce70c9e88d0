"""Index definitions as arangodump writes them, turned into index requests."""

from graphsvc.store.arango.catalog import index_request
from graphsvc.store.base import IndexOutcome


def test_hash_and_skiplist_become_persistent_without_server_assigned_attributes():
    body = index_request(
        "products",
        {"id": "products/123", "type": "hash", "fields": ["sku"], "unique": True, "sparse": False,
         "selectivityEstimate": 1, "name": "idx_sku"},
    )
    assert body == {"type": "persistent", "fields": ["sku"], "unique": True, "sparse": False, "name": "idx_sku"}
    assert index_request("p", {"type": "skiplist", "fields": ["a"]})["type"] == "persistent"


def test_primary_and_edge_indexes_exist_already():
    primary = index_request("p", {"type": "primary", "fields": ["_key"]})
    assert primary == IndexOutcome("p", "primary", ("_key",), "exists")
    assert index_request("e", {"type": "edge", "fields": ["_from", "_to"]}).status == "exists"


def test_other_index_types_pass_through_and_unknown_ones_are_skipped():
    for kind, extra in [
        ("ttl", {"expireAfter": 3600}),
        ("fulltext", {"minLength": 3}),
        ("geo", {"geoJson": True}),
        ("mdi", {"fieldValueTypes": "double"}),
        ("zkd", {"fieldValueTypes": "double"}),
        ("vector", {"params": {"metric": "cosine", "dimension": 8, "nLists": 2}}),
    ]:
        body = index_request("p", {"type": kind, "fields": ["a"], **extra})
        assert body == {"type": kind, "fields": ["a"], **extra}
    assert index_request("p", {"type": "geo2", "fields": ["lat", "lon"]})["type"] == "geo"
    skipped = index_request("p", {"type": "bogus", "fields": ["a"]})
    assert skipped.status == "skipped" and "bogus" in skipped.reason
    assert index_request("p", {"type": "persistent", "fields": []}).status == "skipped"


def test_inverted_index_fields_are_reported_by_name():
    body = index_request("p", {"type": "inverted", "fields": [{"name": "title", "analyzer": "text_en"}, "genre"]})
    assert body["fields"] == [{"name": "title", "analyzer": "text_en"}, "genre"]
    assert index_request("p", {"type": "bogus", "fields": [{"name": "title"}]}).fields == ("title",)
