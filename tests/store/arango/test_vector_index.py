"""Server versions that have vector indexes, and the default IVF cell count."""

import pytest

from graphsvc.errors import StoreError
from graphsvc.store.arango.vector_index import default_n_lists, parse_version, supports_vector_index


@pytest.mark.parametrize(
    "version, supported",
    [("3.11.14", False), ("3.12.3", False), ("3.12.4", True), ("3.12.4-1", True), ("3.12.5-devel", True),
     ("3.13.0", True), ("4.0", True), ("3.9.12", False)],
)
def test_vector_indexes_need_arangodb_3_12_4(version, supported):
    assert supports_vector_index(version) is supported


def test_version_text_that_is_not_a_version_is_a_store_error():
    assert parse_version("3.12.4-rc.1") == (3, 12, 4)
    with pytest.raises(StoreError, match="cannot read the ArangoDB version"):
        parse_version("devel")


def test_default_n_lists_is_15_sqrt_n_but_at_most_n():
    assert default_n_lists(1_000_000) == 15_000
    assert default_n_lists(100) == 100
    assert default_n_lists(10_000) == 1_500
    assert default_n_lists(0) == 1


# -- the real ArangoStore building the index, request by request ----------------------------------
# Shapes: https://docs.arangodb.com/3.12/develop/http-api/indexes/vector/ (POST answers 201 with
# trainingState from 3.12.9), .../indexes/ (listing, withHidden, DELETE), and the vector index page
# https://docs.arangodb.com/3.12/indexes-and-search/indexing/working-with-indexes/vector-indexes/.

import requests  # noqa: E402

from graphsvc.store.arango import aql  # noqa: E402
from graphsvc.store.arango.vector_index import scaled_n_probe  # noqa: E402
from tests.store.arango.harness import ArangoStub, error_body  # noqa: E402
from tests.store.arango.routes_vector import VectorIndexRoutes, vector_index  # noqa: E402


def _server(version="3.12.6", **counts):
    server = ArangoStub(version=version)
    routes = VectorIndexRoutes(server, "products",
                               counts={"documents": 1000, "vectors": 1000, "other": 0, **counts},
                               problem_keys=["m1", "m2", "m3"])
    return server, routes


def _calls(server):
    """The requests after opening the store, as (METHOD endpoint) with the cursor's query named."""
    names = {text: name for name, text in aql.QUERIES.items()}
    out = []
    for r in server.requests[1:]:  # after python-arango's verify on opening
        label = f"{r.method.upper()} {r.endpoint}"
        if r.endpoint == "/_api/cursor":
            label += " " + names.get(r.body["query"], "?")
        if r.endpoint == "/_api/index" and r.method == "get" and "withHidden" in r.params:
            label += " withHidden"
        out.append(label)
    return out


def test_index_is_sparse_from_3_12_6_and_n_lists_counts_only_documents_with_a_vector():
    """Issue 13 point 1: sparse, nLists = 15·√(documents holding a vector)."""
    server, routes = _server("3.12.6", documents=1000, vectors=400)
    outcome = server.store().create_vector_index("products", dimension=16)
    [body] = routes.created
    assert body == {"type": "vector", "name": "vector_embedding", "fields": ["embedding"], "inBackground": True,
                    "sparse": True, "params": {"metric": "cosine", "dimension": 16, "nLists": default_n_lists(400),
                                               "defaultNProbe": max(1, -(-default_n_lists(400) // 16))}}
    assert server.sent("post", "/_api/index")[0].params == {"collection": "products"}
    assert (outcome.status, outcome.sparse, outcome.vectors, outcome.n_lists) == ("created", True, 400, 300)
    assert _calls(server) == ["GET /_api/version", "POST /_api/cursor VECTOR_COUNTS",
                              "GET /_api/index withHidden", "POST /_api/index"]
    assert server.unanswered == []


def test_on_3_12_5_documents_without_a_vector_are_refused_by_key_before_any_index_request():
    """Issue 13 point 1: no sparse vector indexes before 3.12.6 — refuse up front, naming documents."""
    server, routes = _server("3.12.5", documents=1000, vectors=997)
    with pytest.raises(StoreError, match=r"3 documents of 'products' have no 'embedding' \(e\.g\. m1, m2, m3\)"
                                         r".*ArangoDB 3\.12\.5.*3\.12\.6 or later"):
        server.store().create_vector_index("products", dimension=16)
    assert routes.created == [] and not server.sent("post", "/_api/index")
    [examples] = [r for r in server.sent("post", "/_api/cursor") if r.body["query"] == aql.VECTOR_PROBLEM_KEYS]
    assert examples.body["bindVars"] == {"@collection": "products", "attribute": "embedding", "dimension": 16,
                                         "missing": True, "examples": 5}


def test_on_3_12_5_a_complete_collection_gets_an_index_without_the_sparse_attribute():
    server, routes = _server("3.12.5")
    server.store().create_vector_index("products", dimension=16)
    assert "sparse" not in routes.created[0] and routes.created[0]["params"]["nLists"] == default_n_lists(1000)


def test_vectors_of_another_dimension_are_named_before_any_index_request():
    server, routes = _server(other=2)
    routes.problem_keys = ["p9", "p10"]
    with pytest.raises(StoreError, match=r"2 documents of 'products' hold an 'embedding' that is not 16 numbers "
                                         r"\(e\.g\. p9, p10\)"):
        server.store().create_vector_index("products", dimension=16)
    assert routes.created == []


def test_rerun_drops_the_index_trained_on_earlier_vectors_and_builds_it_again():
    """Issue 13 point 2: nLists changed with the count; IVF training is not incremental."""
    server, routes = _server(vectors=1000)
    routes.existing(vector_index("products", 68, dimension=16, n_lists=60))
    outcome = server.store().create_vector_index("products", dimension=16)
    assert routes.dropped == ["products/68"] and routes.vector_ids() == ["products/101"]
    assert _calls(server)[-2:] == ["DELETE /_api/index/products/68", "POST /_api/index"]
    assert outcome.status == "created" and "not incremental" in outcome.reason and "id 68" in outcome.reason


def test_duplicate_identifier_1005_is_reported_as_a_name_clash_not_a_missing_startup_option():
    """Issue 13 point 2: error 1005 used to be reported as a missing --vector-index option."""
    server, routes = _server()
    routes.on_create = lambda body: error_body(409, 1005, "duplicate value")
    with pytest.raises(StoreError, match="another index named 'vector_embedding' on 'products' has a different "
                                         "definition \\(ArangoDB error 1005") as caught:
        server.store().create_vector_index("products", dimension=16)
    assert "--vector-index" not in str(caught.value)


def test_prepare_drops_an_index_of_another_dimension_before_the_write_back():
    """Issue 13 point 2: a dimension change would make every write-back UPDATE fail."""
    server, routes = _server()
    routes.existing(vector_index("products", 68, dimension=128))
    store = server.store()
    assert store.prepare_vector_index("products", dimension=128) == [] and routes.dropped == []
    [dropped] = store.prepare_vector_index("products", dimension=256)
    assert routes.dropped == ["products/68"] and "dimension 128" in dropped and "dimension 256" in dropped


def test_default_n_probe_searches_the_share_of_cells_our_own_index_searches():
    """Issue 13 point 4: the server's defaultNProbe is 1; ours is calibrated to recall 0.97."""
    assert scaled_n_probe(23_478, 1_565, 20) == 301  # 20 of 1,565 cells → the same share of 23,478
    assert scaled_n_probe(3_354, None, None) == 3_354  # our index is exact: so is the server's search
    assert scaled_n_probe(10, 1_000, 1) == 1 and scaled_n_probe(10, 4, 8) == 10
    assert scaled_n_probe(160, 160, None) == 10  # no calibration: 1/16 of the cells
    server, routes = _server(vectors=1_000_000, documents=1_000_000)
    outcome = server.store().create_vector_index("products", dimension=16, calibration={"nlist": 1000, "nprobe": 24})
    assert routes.created[0]["params"]["nLists"] == 15_000
    assert routes.created[0]["params"]["defaultNProbe"] == 360 == outcome.default_n_probe


def test_a_training_that_fails_leaves_an_unusable_index_which_is_dropped_and_reported():
    """Issue 13 point 6, 3.12.10+: the create call succeeds with trainingState "unusable"."""
    server, routes = _server("3.12.10")

    def unusable(body):
        index = routes.existing(vector_index("products", 70, training_state="unusable",
                                             error_message="not enough training data for vector index"))
        return 201, {**index, "isNewlyCreated": True, "error": False, "code": 201}

    routes.on_create = unusable
    with pytest.raises(StoreError, match="could not be trained on ArangoDB 3.12.10: not enough training data"):
        server.store().create_vector_index("products", dimension=16)
    assert routes.dropped == ["products/70"] and routes.vector_ids() == []


def test_up_to_3_12_9_a_failed_training_fails_the_call_and_the_leftover_index_is_dropped():
    """Issue 13 point 6, up to 3.12.9: error 1555, the index stays behind "unusable"."""
    server, routes = _server("3.12.9")

    def fails(body):
        routes.existing(vector_index("products", 71, training_state="unusable"))
        return error_body(500, 1555, "vector index not ready: not enough training data")

    routes.on_create = fails
    with pytest.raises(StoreError, match="could not train vector index 'vector_embedding'.*unusable index was dropped"):
        server.store().create_vector_index("products", dimension=16)
    assert routes.dropped == ["products/71"]


def test_an_unusable_index_found_existing_is_dropped_with_the_reason():
    server, routes = _server("3.12.10")
    routes.existing(vector_index("products", 68, training_state="unusable", error_message="too few vectors"))
    outcome = server.store().create_vector_index("products", dimension=16)
    assert routes.dropped == ["products/68"] and "its training failed (too few vectors)" in outcome.reason


def test_background_build_is_polled_by_id_until_trained():
    """Issue 13 point 11: inBackground, then GET /_api/index/<id> until "ready"."""
    server, routes = _server("3.12.10")

    def training(body):
        index = routes.existing(vector_index("products", 72, training_state="training"))
        return 201, {**index, "isNewlyCreated": True, "error": False, "code": 201}

    routes.on_create = training
    routes.after_create_state = ["training", "ingesting", "ready"]
    outcome = server.store().create_vector_index("products", dimension=16, poll_interval=0)
    assert routes.created[0]["inBackground"] is True
    assert [r.endpoint for r in server.sent("get", "/_api/index/.*")] == ["/_api/index/products/72"] * 3
    assert outcome.training_state == "ready"


def test_a_timed_out_create_request_is_reported_as_still_building_not_as_unreachable():
    """Issue 13 point 11: the server goes on building after our request timed out."""
    server, routes = _server()

    def times_out(body):
        routes.existing(vector_index("products", 73), hidden=True)
        raise requests.exceptions.ReadTimeout("read timed out (600 s)")

    routes.on_create = times_out
    with pytest.raises(StoreError, match="'vector_embedding' on 'products' is still building on the server") as caught:
        server.store().create_vector_index("products", dimension=16, timeout=0, poll_interval=0)
    assert "not reachable" not in str(caught.value)


def test_a_timed_out_create_request_whose_index_appears_meanwhile_succeeds():
    server, routes = _server()
    polls = []

    def times_out(body):
        routes.existing(vector_index("products", 74), hidden=True)
        raise requests.exceptions.ReadTimeout("read timed out")

    def listing_after_build(request):
        polls.append(request)
        if len(polls) == 2:
            routes.hidden.clear()  # the background build finished
        return routes._list(request)

    routes.on_create = times_out
    server.on("get", "/_api/index", listing_after_build)
    outcome = server.store().create_vector_index("products", dimension=16, timeout=60, poll_interval=0)
    assert outcome.training_state == "ready" and routes.vector_ids() == ["products/74"]
