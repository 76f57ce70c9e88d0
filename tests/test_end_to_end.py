"""The whole pipeline on real components: dumps → embedded store → training → export →
the real Triton server (`graphsvc triton serve`) → embed jobs → FAISS → write-back → queries,
and the demo's users: the user tower trained on the movies dump's ratings → recommendations."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from graphsvc.cli import cli as graphsvc_cli
from graphsvc.index.artifacts import current_version, load_current
from graphsvc.recommend.training import TrainSettings
from graphsvc.store import open_store
from graphsvc.triton.client import TritonClient
from jobs.cli import cli as jobs_cli
from jobs.synth import DemoUsersSpec, ProductGraphSpec, write_movies_dump, write_products_dump
from jobs.train import TrainingConfig, train_graphsage
from jobs.train_recommender import TrainRecommenderConfig, train_recommender
from tests.support import REPO_ROOT, free_ports

SPEC = ProductGraphSpec(num_products=800, num_categories=8, seed=11)


def run(cli, args, settings):
    result = CliRunner().invoke(cli, [*settings, *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    products_dump, movies_dump = root / "dumps" / "products", root / "dumps" / "movies"
    write_products_dump(products_dump, SPEC)
    write_movies_dump(movies_dump)
    store_path, index_dir, repository = root / "store.duckdb", root / "indexes", root / "model_repository"
    http, grpc, metrics = free_ports(3)
    settings = ["--store", str(store_path), "--index-dir", str(index_dir), "--triton-url", f"grpc://127.0.0.1:{grpc}"]

    restored = json.loads(
        run(jobs_cli, ["restore-dumps", str(products_dump), str(movies_dump), "--json"], settings).stdout
    )

    with open_store(str(store_path)) as store:
        train_graphsage(store, root / "graphsage.pth.tar",
                        config=TrainingConfig(epochs=8, hidden=64, batch_size=64, seed=1))
        train_recommender(store, TrainRecommenderConfig(users="users", ratings="rated", out=root / "user_tower.pt",
                                                        settings=TrainSettings(max_steps=400)))
    run(jobs_cli, ["export-models", "--model-repository", str(repository),
                   "--checkpoint", str(root / "graphsage.pth.tar"), "--user-tower", str(root / "user_tower.pt")],
        settings)

    server = subprocess.Popen(
        [sys.executable, "-m", "graphsvc.cli", "triton", "serve", "--model-repository", str(repository),
         "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics),
         "--runtime-dir", str(root / "triton-runtime")],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        with TritonClient(f"grpc://127.0.0.1:{grpc}") as client:
            client.wait_ready(timeout=180, models=["graphsage", "sentence_encoder", "user_tower"])
        products = json.loads(run(jobs_cli, ["embed-products", "--json"], settings).stdout)
        movies = json.loads(run(jobs_cli, ["embed-movies", "--json"], settings).stdout)
        yield {
            "root": root, "settings": settings, "store": store_path, "index_dir": index_dir,
            "restored": restored, "products": products, "movies": movies, "server": server,
            "grpc": grpc,
        }
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            output, _ = server.communicate(timeout=90)
        except subprocess.TimeoutExpired as err:
            server.kill()
            output, _ = server.communicate()
            log = root / "triton-runtime" / "tritonserver.log"
            tail = log.read_text(errors="replace").splitlines()[-20:] if log.exists() else []
            raise AssertionError("graphsvc triton serve did not stop on SIGTERM:\n" + output + "\n".join(tail)) from err
        assert server.returncode == 0, output


def test_restore_reports_every_collection(pipeline):
    counts = {c["collection"]: c["written"] for c in pipeline["restored"]["collections"]}
    assert counts["products"] == SPEC.num_products
    assert counts["movies"] == 202 and counts["directed_by"] == 202
    assert counts["users"] == DemoUsersSpec().users == 400 and counts["rated"] == 8026
    assert counts["bought_together"] > SPEC.num_products * 4
    assert sorted(pipeline["restored"]["graphs"]) == ["movies_graph", "products_graph"]


def test_embed_jobs_write_back_embeddings_similar_lists_and_categories(pipeline):
    assert pipeline["products"]["embedded"] == SPEC.num_products
    assert pipeline["movies"]["embedded"] == 202
    with open_store(str(pipeline["store"])) as store:
        keys = store.select_keys("products")
        documents = store.get_documents("products", keys)
    assert len(documents) == SPEC.num_products
    for document in documents:
        assert len(document["embedding"]) == 64
        assert len(document["similar"]) == 10
        scores = [s["score"] for s in document["similar"]]
        assert scores == sorted(scores, reverse=True)
        assert document["_key"] not in {s["_key"] for s in document["similar"]}
    accuracy = np.mean([d["predicted_category"] == d["category"] for d in documents])
    assert accuracy > 0.8
    # the similar products of a product are mostly from its planted category
    category = {d["_key"]: d["category"] for d in documents}
    same = np.mean([category[s["_key"]] == d["category"] for d in documents for s in d["similar"]])
    assert same > 0.8


def test_published_index_matches_the_store(pipeline):
    loaded = load_current(pipeline["index_dir"], "products")
    assert loaded.manifest.count == SPEC.num_products
    assert loaded.manifest.dim == 64 and loaded.manifest.metric == "cosine"
    assert loaded.manifest.model["name"] == "graphsage"
    assert load_current(pipeline["index_dir"], "movies").manifest.dim == 384


def test_similar_cli_returns_top_k_with_scores_and_categories(pipeline):
    result = run(graphsvc_cli, ["similar", "products/P0000042", "--json"], pipeline["settings"])
    answer = json.loads(result.stdout)
    hits = answer["hits"]
    assert len(hits) == 10
    assert all("category" in h and "score" in h for h in hits)
    with open_store(str(pipeline["store"])) as store:
        document = store.get_documents("products", ["P0000042"])[0]
        neighbours = store.get_documents("products", [h["_key"] for h in hits])
    # the CLI answers from the index what the job wrote back onto the document
    assert [h["_key"] for h in hits] == [s["_key"] for s in document["similar"]]
    assert np.allclose([h["score"] for h in hits], [s["score"] for s in document["similar"]], atol=1e-5)
    assert [h["category"] for h in hits] == [n["category"] for n in neighbours]

    three = json.loads(
        run(graphsvc_cli, ["similar", "products/P0000042", "-k", "3", "--json"], pipeline["settings"]).stdout
    )
    assert [h["_key"] for h in three["hits"]] == [h["_key"] for h in hits[:3]]


def test_search_by_a_movies_own_description_returns_it_first(pipeline):
    with open_store(str(pipeline["store"])) as store:
        movies = store.get_documents("movies", ["m0007", "m0150"])
    for movie in movies:
        result = run(graphsvc_cli, ["search", "movies", movie["description"], "--json"], pipeline["settings"])
        hits = json.loads(result.stdout)["hits"]
        assert hits[0]["_key"] == movie["_key"]
        assert hits[0]["score"] > 0.99
        assert len(hits) == 10


def test_search_by_a_theme_finds_matching_genre(pipeline):
    result = run(graphsvc_cli, ["search", "movies", "a haunted house where ghosts terrify a family", "--json",
                                "--fields", "genres"], pipeline["settings"])
    top = json.loads(result.stdout)["hits"][:3]
    assert sum("Horror" in h["genres"] for h in top) >= 2


def test_http_service_searches_text_through_triton_and_answers_like_the_job(pipeline):
    from fastapi.testclient import TestClient

    from graphsvc.service.app import ServiceConfig, create_app

    config = ServiceConfig(index_dir=str(pipeline["index_dir"]), store=str(pipeline["store"]),
                           triton_url=f"grpc://127.0.0.1:{pipeline['grpc']}")
    with open_store(str(pipeline["store"])) as store:
        movies = store.get_documents("movies", ["m0007", "m0150"])
        product = store.get_documents("products", ["P0000042"])[0]
    with TestClient(create_app(config)) as client:
        theme = client.post("/v1/movies/search", json={"text": "a haunted house where ghosts terrify a family",
                                                       "k": 3, "fields": ["genres", "title"]})
        assert theme.status_code == 200, theme.text
        assert sum("Horror" in h["genres"] for h in theme.json()["hits"]) >= 2
        batch = client.post("/v1/movies/search/batch",
                            json={"texts": [m["description"] for m in movies], "k": 1}).json()
        assert [r["hits"][0]["_key"] for r in batch["results"]] == ["m0007", "m0150"]
        similar = client.get("/v1/products/P0000042/similar").json()
        assert [h["_key"] for h in similar["hits"]] == [s["_key"] for s in product["similar"]]
        refused = client.post("/v1/products/search", json={"text": "a red chair"})
        assert refused.status_code == 400 and "search it by vector" in refused.json()["error"]


def test_explain_aql_prints_the_vector_index_query_for_the_same_question(pipeline):
    result = run(graphsvc_cli, ["similar", "products/P0000042", "-k", "5", "--explain-aql", "--json",
                                "--filter", '{"category": {"in": [3, 4]}}'], pipeline["settings"])
    explained = json.loads(result.stdout)
    assert "APPROX_NEAR_COSINE(d[@attribute], @query_vector, { nProbe: @n_probe })" in explained["query"]
    bind = explained["bindVars"]
    assert bind["@collection"] == "products" and bind["key"] == "P0000042" and bind["k"] == 5 and bind["limit"] == 6
    assert bind["attr_0"] == "category" and bind["value_0"] == [3, 4]
    stored = load_current(pipeline["index_dir"], "products")
    expected = stored.index.reconstruct_batch([stored.position("P0000042")])[0]
    assert np.allclose(bind["query_vector"], expected, atol=1e-6)


def test_rerunning_restore_and_embed_gives_the_same_answers_without_duplicates(pipeline):
    settings = pipeline["settings"]
    with open_store(str(pipeline["store"])) as store:
        before = {d["_key"]: d["similar"] for d in store.get_documents("products", store.select_keys("products"))}
    version = current_version(pipeline["index_dir"], "products")
    run(jobs_cli, ["restore-dumps", str(pipeline["root"] / "dumps" / "products")], settings)
    again = json.loads(run(jobs_cli, ["embed-products", "--json"], settings).stdout)
    assert again["index_version"] == version + 1
    with open_store(str(pipeline["store"])) as store:
        assert store.collection("products").count == SPEC.num_products
        assert store.collection("bought_together").count == pipeline["restored"]["collections"][1]["written"]
        after = {d["_key"]: d["similar"] for d in store.get_documents("products", store.select_keys("products"))}
    assert [s["_key"] for s in after["P0000042"]] == [s["_key"] for s in before["P0000042"]]
    changed = sum([s["_key"] for s in after[k]] != [s["_key"] for s in before[k]] for k in before)
    assert changed == 0


def test_demo_users_get_unrated_movies_of_their_taste_and_keep_them_across_a_restore(pipeline):
    settings, tower = pipeline["settings"], str(pipeline["root"] / "user_tower.pt")
    reindex = ["reindex", "users", "--users", "users", "--ratings", "rated", "--checkpoint", tower, "--json"]
    first = json.loads(run(jobs_cli, reindex, settings).stdout)
    assert (first["mode"], first["written"], first["by_source"]) == ("full", 400, {"model": 398, "popular": 2})
    answer = json.loads(run(graphsvc_cli, ["recommend", "users/u0003", "--fields", "title,genres", "--json"],
                            settings).stdout)
    with open_store(str(pipeline["store"])) as store:
        user = store.get_documents("users", ["u0003"])[0]
        ratings = store.get_documents("rated", store.select_keys("rated"))
    rated = {d["_to"] for d in ratings if d["_from"] == "users/u0003"}
    assert user["likes"] == ["Crime"] and answer["source"] == "model" and len(answer["hits"]) == 10
    assert not {f"movies/{h['_key']}" for h in answer["hits"]} & rated
    assert [h["_key"] for h in answer["hits"]] == [m["_key"] for m in user["recommended"]]
    assert sum("Crime" in h["genres"] for h in answer["hits"]) >= 5  # about 1 in 8 movies is a crime movie
    popular = json.loads(run(graphsvc_cli, ["recommend", "users/u0400", "-k", "3", "--json"], settings).stdout)
    assert popular["source"] == "popular" and len(popular["hits"]) == 3
    # restoring the users again replaces their documents: the next run writes the same lists back
    run(jobs_cli, ["restore-dumps", str(pipeline["root"] / "dumps" / "movies"), "--collection", "users"], settings)
    again = json.loads(run(jobs_cli, reindex, settings).stdout)
    assert (again["computed_users"], again["rewritten_users"], again["written"]) == (0, 400, 400)
    assert again["index_version"] == first["index_version"] and not again["published"]
    with open_store(str(pipeline["store"])) as store:
        assert store.get_documents("users", ["u0003"])[0]["recommended"] == user["recommended"]


def test_embed_with_triton_down_is_one_line_naming_the_url(pipeline, tmp_path):
    (closed,) = free_ports(1)
    settings = ["--store", str(pipeline["store"]), "--index-dir", str(tmp_path), "--triton-url", f"grpc://127.0.0.1:{closed}"]
    result = CliRunner().invoke(jobs_cli, [*settings, "embed-movies"])
    assert result.exit_code == 1
    assert f"127.0.0.1:{closed}" in result.stderr and "graphsvc triton serve" in result.stderr
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert current_version(tmp_path, "movies") is None
