"""The HTTP API over a real DuckDB store and a real FAISS index."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from graphsvc.index.artifacts import publish
from graphsvc.index.faiss_index import VectorIndex
from graphsvc.service.app import ServiceConfig, create_app
from tests.service.conftest import MODEL, exact_top


def client_for(catalogue, **options) -> TestClient:
    config = ServiceConfig(index_dir=str(catalogue.index_dir), store=str(catalogue.store), **options)
    return TestClient(create_app(config))


@pytest.fixture
def client(catalogue):
    with client_for(catalogue) as c:
        yield c


def test_similar_returns_k_keys_and_scores_of_the_exact_neighbours(client, catalogue):
    response = client.get("/v1/products/P00007/similar", params={"k": 5})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["collection"] == "products" and body["index_version"] == 1
    keys = [h["_key"] for h in body["hits"]]
    assert keys == exact_top(catalogue, catalogue.vectors[7], 5, exclude="P00007")
    scores = [h["score"] for h in body["hits"]]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    assert set(body["hits"][0]) == {"_key", "score"}


def test_fields_come_from_the_store_in_one_answer(client, catalogue):
    body = client.get("/v1/products/P00007/similar", params={"k": 3, "fields": "title,category,nothing"}).json()
    for hit in body["hits"]:
        document = catalogue.documents[hit["_key"]]
        assert hit["title"] == document["title"] and hit["category"] == document["category"]
        assert hit["nothing"] is None


def test_filters_still_return_k_hits_that_all_match(client, catalogue):
    spec = {"category": {"in": ["Books"]}, "price": {"lt": 20}}
    allowed = {k for k, d in catalogue.documents.items() if d["category"] == "Books" and d["price"] < 20}
    assert len(allowed) > 10
    body = client.get("/v1/products/P00007/similar", params={"k": 10, "filter": json.dumps(spec),
                                                             "fields": "category,price"}).json()
    assert len(body["hits"]) == 10
    assert all(h["category"] == "Books" and h["price"] < 20 for h in body["hits"])
    assert [h["_key"] for h in body["hits"]] == exact_top(catalogue, catalogue.vectors[7], 10, allowed, "P00007")
    assert body["query"]["filter"] == spec


def test_a_filter_matching_fewer_than_k_returns_all_of_them(client, catalogue):
    body = client.get("/v1/products/P00007/similar",
                      params={"k": 50, "filter": json.dumps({"price": {"gte": 48.5}})}).json()
    expected = {k for k, d in catalogue.documents.items() if d["price"] >= 48.5} - {"P00007"}
    assert {h["_key"] for h in body["hits"]} == expected


def test_search_by_vector_and_in_batches(client, catalogue):
    vector = catalogue.vectors[11].tolist()
    one = client.post("/v1/products/search", json={"vector": vector, "k": 4}).json()
    assert [h["_key"] for h in one["hits"]] == exact_top(catalogue, catalogue.vectors[11], 4)
    assert one["hits"][0]["_key"] == "P00011" and one["hits"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    batch = client.post("/v1/products/search/batch",
                        json={"vectors": [vector, catalogue.vectors[12].tolist()], "k": 4}).json()
    assert [[h["_key"] for h in r["hits"]] for r in batch["results"]] == [
        exact_top(catalogue, catalogue.vectors[11], 4), exact_top(catalogue, catalogue.vectors[12], 4)]


def test_batch_similar_answers_each_key_and_reports_unknown_ones(client, catalogue):
    body = client.post("/v1/products/similar", json={"keys": ["P00001", "NOPE", "P00002"], "k": 3}).json()
    assert [r["key"] for r in body["results"]] == ["P00001", "NOPE", "P00002"]
    assert [h["_key"] for h in body["results"][0]["hits"]] == exact_top(catalogue, catalogue.vectors[1], 3,
                                                                        exclude="P00001")
    assert body["results"][1]["error"]["status"] == 404
    assert [h["_key"] for h in body["results"][2]["hits"]] == exact_top(catalogue, catalogue.vectors[2], 3,
                                                                        exclude="P00002")


@pytest.mark.parametrize("request_args, status, message", [
    (("get", "/v1/products/P00001/similar?k=0"), 400, "k"),
    (("get", "/v1/products/P00001/similar?k=1001"), 400, "k"),
    (("get", "/v1/products/P00001/similar?filter=%7Bnot-json"), 400, "filter is not valid JSON"),
    (("get", '/v1/products/P00001/similar?filter={"price":{"like":"%25"}}'), 400, "unknown operator 'like'"),
    (("get", '/v1/products/P00001/similar?filter={"price":{"lt":true}}'), 400, "not a boolean"),
    (("get", "/v1/products/NOPE/similar"), 404, "'products/NOPE' is not in index version 1"),
    (("get", "/v1/movies/M1/similar"), 404, "collection 'movies' has no index"),
    (("post", "/v1/products/search", {"vector": [1.0, 2.0]}), 400, "16"),
    (("post", "/v1/products/search", {"text": "garden chair"}), 400, "search it by vector"),
    (("post", "/v1/products/search", {"vector": [1.0] * 16, "text": "x"}), 400, "exactly one"),
    (("post", "/v1/products/search", {"vector": [1.0] * 16, "aql": "FOR d IN products RETURN d"}), 400, "aql"),
    (("post", "/v1/products/similar", {"keys": ["P1"] * 257}), 400, "keys"),
    (("post", "/v1/products/similar", {"keys": []}), 400, "keys"),
])
def test_bad_input_is_a_4xx_with_a_message(client, request_args, status, message):
    method, url, *body = request_args
    response = client.request(method, url, json=body[0] if body else None)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_non_finite_vectors_are_refused(client):
    response = client.post("/v1/products/search", content=b'{"vector": [NaN' + b", 1.0" * 15 + b"]}",
                           headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text


def test_bodies_over_the_limit_are_refused_before_parsing(catalogue):
    with client_for(catalogue, max_body_bytes=1000) as c:
        response = c.post("/v1/products/search", json={"vector": [0.5] * 400})
        assert response.status_code == 413 and "1000 bytes" in response.json()["error"]
        assert c.post("/v1/products/search", json={"vector": [0.5] * 16}).status_code == 200


def test_bearer_token_guards_everything_but_health(catalogue):
    with client_for(catalogue, token="s3cret") as c:
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200
        refused = c.get("/v1/products/P00001/similar")
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert c.get("/v1/products/P00001/similar", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/metrics").status_code == 401
        ok = c.get("/v1/products/P00001/similar", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200


def test_not_ready_and_503_until_an_index_is_published(tmp_path, catalogue):
    empty = tmp_path / "empty-indexes"
    config = ServiceConfig(index_dir=str(empty), collections=["products"], reload_interval=0.05)
    with TestClient(create_app(config)) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").status_code == 503
        response = c.get("/v1/products/P00001/similar")
        assert response.status_code == 503 and "no index of 'products' is loaded" in response.json()["error"]
        assert response.headers["retry-after"] == "1"
        publish(empty, "products", VectorIndex.build(catalogue.vectors, kind="flat"), catalogue.keys, MODEL)
        c.app.state.reloader.check()
        assert c.get("/readyz").json() == {"status": "ready", "indexes": {"products": 1}}
        assert c.get("/v1/products/P00001/similar").status_code == 200


def test_metrics_count_requests_by_route_and_status_and_show_the_index(client):
    client.get("/v1/products/P00001/similar")
    client.get("/v1/products/NOPE/similar")
    text = client.get("/metrics").text
    route = 'route="/v1/{collection}/{key}/similar"'
    assert f'graphsvc_requests_total{{method="GET",{route},status="200"}} 1.0' in text
    assert f'graphsvc_requests_total{{method="GET",{route},status="404"}} 1.0' in text
    assert f'graphsvc_request_duration_seconds_bucket{{le="0.005",method="GET",{route}}}' in text
    assert 'graphsvc_index_version{collection="products"} 1.0' in text
    assert 'graphsvc_index_vectors{collection="products"} 400.0' in text


def test_collections_lists_the_loaded_index(client):
    (entry,) = client.get("/v1/collections").json()["collections"]
    assert entry["collection"] == "products" and entry["version"] == 1 and entry["count"] == 400
    assert entry["text_search"] is False


def test_openapi_schema_documents_the_routes(client):
    schema = client.get("/openapi.json").json()
    assert {"/v1/{collection}/{key}/similar", "/v1/{collection}/search", "/v1/{collection}/similar",
            "/v1/{collection}/search/batch", "/healthz", "/readyz", "/metrics"} <= set(schema["paths"])


def test_the_hot_route_answers_exactly_what_the_app_answers(client):
    fast = client.get("/v1/products/P00021/similar?k=7")
    through_app = client.get("/v1/products/P00021/similar", params={"k": 7, "fields": ""})
    assert fast.status_code == through_app.status_code == 200
    assert fast.json() == through_app.json()
    assert client.get("/v1/products/P00021/similar").json()["query"] == {"key": "P00021", "k": 10}
    missing = client.get("/v1/products/NOPE/similar?k=3")
    assert missing.status_code == 404 and missing.json() == {
        "error": "'products/NOPE' is not in index version 1 of 'products'"
    }
    assert client.get("/v1/products/P00021/similar?k=1001").status_code == 400
    metrics = client.get("/metrics").text
    assert 'graphsvc_requests_total{method="GET",route="/v1/{collection}/{key}/similar",status="200"} 3.0' in metrics
