"""`graphsvc recommend USERS/KEY` and GET /v1/{users}/{key}/recommendations over a real
embedded store with the seeded rating graph and a recommendations artifact published by
the job (user vectors from the tower in this process: the Triton path is tested in
tests/jobs/test_recommend_users.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from fastapi.testclient import TestClient

from graphsvc.cli import cli
from graphsvc.models.user_tower import TowerCheckpoint, TowerSettings, UserTower, in_process, load_tower
from graphsvc.recommend.ratings import load_ratings
from graphsvc.service.app import ServiceConfig, create_app
from graphsvc.store import open_store
from jobs.recommend_users import RecommendUsersConfig, recommend_with
from tests.recommend.ratings_graph import RatingsSpec, user_key, write_ratings_graph

LOCAL = {"name": "user_tower", "version": "local"}
UNRATED = user_key(RatingsSpec().users - 1)


@dataclass
class Published:
    store: Path
    index_dir: Path
    checkpoint: Path
    rated: dict  # user key → set of movie keys


def run_job(published: Published) -> dict:
    config = RecommendUsersConfig(checkpoint=published.checkpoint)
    with open_store(str(published.store)) as store:
        return recommend_with(store, in_process(load_tower(published.checkpoint).model), published.index_dir, config,
                              LOCAL)


@pytest.fixture
def published(tmp_path) -> Published:
    write_ratings_graph(tmp_path / "store.duckdb")
    with open_store(str(tmp_path / "store.duckdb")) as store:
        histories = load_ratings(store)
    torch.manual_seed(0)  # an untrained tower ranks as well as any for what is tested here
    TowerCheckpoint(UserTower(histories.num_movies, 8).eval(), TowerSettings(dim=8), histories.movie_keys, "movies",
                    torch.from_numpy(histories.popularity()), {}).save(tmp_path / "tower.pt")
    rated = {}
    for u in range(histories.num_users):
        rated[histories.user_keys[u].as_py()] = {histories.movie_keys[m].as_py() for m in histories.rated(u)}
    result = Published(tmp_path / "store.duckdb", tmp_path / "indexes", tmp_path / "tower.pt", rated)
    run_job(result)
    return result


def invoke(published: Published, *args):
    return CliRunner().invoke(cli, ["--store", str(published.store), "--index-dir", str(published.index_dir), *args])


def written_back(published: Published, key: str) -> list[str]:
    with open_store(str(published.store)) as store:
        return [m["_key"] for m in store.get_documents("Users", [key])[0]["recommended"]]


def test_cli_recommends_the_written_back_list_and_nothing_the_user_rated(published):
    result = invoke(published, "recommend", "Users/u0005", "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    keys = [h["_key"] for h in body["hits"]]
    assert body["source"] == "model" and body["movies"] == "movies" and body["index_version"] == 1
    assert keys == written_back(published, "u0005") and len(keys) == 10
    assert not set(keys) & published.rated["u0005"]
    assert all("title" in h and "genre" in h for h in body["hits"])  # short fields of the movie documents
    text = invoke(published, "recommend", "Users/u0005", "-k", "3")
    assert text.exit_code == 0 and text.output.splitlines()[0].split()[:2] == ["1", f"movies/{keys[0]}"]


def test_cli_filter_keeps_k_matching_unrated_movies(published):
    result = invoke(published, "recommend", "Users/u0005", "-k", "5", "--json", "--fields", "genre",
                    "--filter", '{"genre": "Drama"}')
    assert result.exit_code == 0, result.output
    hits = json.loads(result.output)["hits"]
    assert len(hits) == 5 and all(h["genre"] == "Drama" for h in hits)
    assert not {h["_key"] for h in hits} & published.rated["u0005"]


def test_cli_user_without_ratings_gets_popular_movies_marked_and_unknown_user_is_one_line(published):
    result = invoke(published, "recommend", f"Users/{UNRATED}", "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["source"] == "popular" and [h["_key"] for h in body["hits"]] == written_back(published, UNRATED)
    unknown = invoke(published, "recommend", "Users/nobody")
    assert unknown.exit_code == 1
    assert unknown.output == "error: user 'Users/nobody' does not exist\n"
    bad = invoke(published, "recommend", "u0005")
    assert bad.exit_code != 0 and "is not USERS/KEY" in bad.output


def test_http_answers_like_the_cli_404s_an_unknown_user_and_hot_reloads_a_new_version(published):
    config = ServiceConfig(index_dir=str(published.index_dir), store=str(published.store), reload_interval=0.05)
    with TestClient(create_app(config)) as client:
        response = client.get("/v1/Users/u0005/recommendations", params={"k": 4})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["source"] == "model" and [h["_key"] for h in body["hits"]] == written_back(published, "u0005")[:4]
        assert set(body["hits"][0]) == {"_key", "score"}

        popular = client.get(f"/v1/Users/{UNRATED}/recommendations").json()
        assert popular["source"] == "popular" and len(popular["hits"]) == 10

        missing = client.get("/v1/Users/nobody/recommendations")
        assert missing.status_code == 404 and missing.json() == {"error": "user 'Users/nobody' does not exist"}

        # the user rates the first movie of their list; the job publishes version 2
        first = body["hits"][0]["_key"]
        with open_store(str(published.store)) as store:
            store.upsert_documents("Ratings", [{"_key": "late", "_from": "Users/u0005", "_to": f"movies/{first}",
                                                "rating": 5, "timestamp": 9_999_999}])
        assert run_job(published)["written"] == 1
        reloaded = _wait_for_version(client, 2)  # the service's reloader swapped it in
        assert first not in [h["_key"] for h in reloaded["hits"]]


def _wait_for_version(client, version: int) -> dict:
    import time

    deadline = time.monotonic() + 10
    while True:
        body = client.get("/v1/Users/u0005/recommendations", params={"k": 10}).json()
        if body.get("index_version") == version or time.monotonic() > deadline:
            assert body.get("index_version") == version, body
            return body
        time.sleep(0.05)


def test_no_published_recommendations_is_a_404_naming_the_job(tmp_path):
    write_ratings_graph(tmp_path / "store.duckdb")
    result = CliRunner().invoke(cli, ["--store", str(tmp_path / "store.duckdb"), "--index-dir", str(tmp_path / "none"),
                                      "recommend", "Users/u0001"])
    assert result.exit_code == 1
    assert result.output == ("error: no recommendations for 'Users' are published — "
                             "run 'jobs recommend-users --users Users'\n")
