"""`jobs recommend-users` against the real Triton server serving the exported user tower,
on the seeded rating graph in a real embedded store."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pytest
import torch
from click.testing import CliRunner

from graphsvc.errors import ModelRepositoryError
from graphsvc.index.artifacts import current_version, load_current
from graphsvc.models.user_tower import MOVIES, RATINGS, USER_VECTOR, in_process, load_tower
from graphsvc.recommend.artifact import recommendations_of
from graphsvc.runs import EXIT_LOCK_HELD, job_lock_path
from graphsvc.settings import TEST_KILL_AT
from graphsvc.store import open_store
from jobs.cli import cli as jobs_cli
from jobs.recommend_users import RecommendUsersConfig, recommend_users, recommend_with
from tests.recommend.ratings_graph import RatingsSpec, user_key
from tests.support import REPO_ROOT


def _copy(user_tower_triton, tmp_path):
    _, store_path, checkpoint, client = user_tower_triton
    shutil.copy(store_path, tmp_path / "store.duckdb")
    return tmp_path / "store.duckdb", checkpoint, client


def _recommended(store) -> dict:
    table = pa.Table.from_batches(list(store.pull("Users", {
        "recommended": pa.list_(pa.struct([("_key", pa.string()), ("_id", pa.string()), ("score", pa.float32())])),
        "recommended_source": pa.string()})))
    return {row["_key"]: (row["recommended_source"], row["recommended"]) for row in table.to_pylist()}


def test_exported_tower_equals_eager_in_torchscript_and_through_triton(user_tower_triton):
    root, _, checkpoint, client = user_tower_triton
    eager = load_tower(checkpoint).model
    scripted = torch.jit.load(str(next((root / "repository" / "user_tower").glob("*/model.pt"))))
    rng = np.random.default_rng(0)
    movies = rng.integers(0, eager.movie_input.num_embeddings, (5, 7))
    ratings = rng.integers(0, 6, (5, 7)).astype(np.float32)  # 0: padding, and one row all padding
    ratings[4] = 0
    with torch.inference_mode():
        expected = eager(torch.from_numpy(movies), torch.from_numpy(ratings)).numpy()
        script_out = scripted(torch.from_numpy(movies), torch.from_numpy(ratings)).numpy()
    served = client.infer("user_tower", {MOVIES: movies, RATINGS: ratings})[USER_VECTOR]
    np.testing.assert_allclose(script_out, expected, atol=1e-5)
    np.testing.assert_allclose(served, expected, atol=1e-5)
    assert expected.shape == (5, 33) and (expected[:, -1] == 1).all()


def test_job_through_triton_equals_the_in_process_model_and_leaves_out_what_users_rated(user_tower_triton, tmp_path):
    store_path, checkpoint, client = _copy(user_tower_triton, tmp_path)
    config = RecommendUsersConfig(checkpoint=checkpoint, batch_size=64)
    with open_store(str(store_path)) as store:
        summary = recommend_users(store, client, tmp_path / "triton", config)
        through_triton = _recommended(store)
        local = recommend_with(store, in_process(load_tower(checkpoint).model), tmp_path / "local", config,
                               {"name": "user_tower", "version": "local"})
        in_process_lists = _recommended(store)
        rated = {}
        for row in pa.Table.from_batches(list(store.pull("Ratings", {"_from": pa.string(), "_to": pa.string()}))
                                         ).to_pylist():
            rated.setdefault(row["_from"].split("/")[1], set()).add(row["_to"])
    spec = RatingsSpec()
    assert summary["num_users"] == spec.users and summary["written"] == spec.users
    assert summary["by_source"] == {"model": spec.users - spec.unrated_users, "popular": spec.unrated_users}
    assert summary["batches"] == {"computed": 3, "reused": 0} and summary["mode"] == "full"
    assert local["written"] == spec.users
    for key, (_, triton_list) in through_triton.items():
        local_list = in_process_lists[key][1]
        assert [m["_key"] for m in triton_list] == [m["_key"] for m in local_list]
        np.testing.assert_allclose([m["score"] for m in triton_list], [m["score"] for m in local_list], atol=1e-4)
        assert len(triton_list) == 10
        assert not {m["_id"] for m in triton_list} & rated.get(key, set())
        scores = [m["score"] for m in triton_list]
        assert scores == sorted(scores, reverse=True)


def test_users_with_no_ratings_get_the_most_popular_movies_marked_as_such(user_tower_triton, tmp_path):
    store_path, checkpoint, client = _copy(user_tower_triton, tmp_path)
    with open_store(str(store_path)) as store:
        recommend_users(store, client, tmp_path / "indexes", RecommendUsersConfig(checkpoint=checkpoint))
        lists = _recommended(store)
    tower = load_tower(checkpoint)
    popularity = tower.popularity.numpy()
    unrated = user_key(RatingsSpec().users - 1)
    source, movies = lists[unrated]
    assert source == "popular"
    expected = np.lexsort((np.arange(len(popularity)), -popularity))[:10]
    assert [m["_key"] for m in movies] == tower.movie_keys.take(pa.array(expected)).to_pylist()
    assert [m["score"] for m in movies] == popularity[expected].astype(float).tolist()
    loaded = load_current(tmp_path / "indexes", "Users.recommendations")
    data = recommendations_of(loaded)
    assert data.source(data.row(unrated)) == "popular" and data.vector(data.row(unrated)) is None


def test_a_new_rating_rewrites_only_that_users_list_and_drops_the_rated_movie(user_tower_triton, tmp_path):
    store_path, checkpoint, client = _copy(user_tower_triton, tmp_path)
    config = RecommendUsersConfig(checkpoint=checkpoint)
    with open_store(str(store_path)) as store:
        recommend_users(store, client, tmp_path / "indexes", config)
        before = _recommended(store)
        user = user_key(5)
        movie = before[user][1][0]["_id"]  # the first of the user's current list
        store.upsert_documents("Ratings", [{"_key": "new-rating", "_from": f"Users/{user}", "_to": movie,
                                            "rating": 5, "timestamp": 9_999_999}])
        summary = recommend_users(store, client, tmp_path / "indexes", config)
        after = _recommended(store)
    # one document written back: nobody else's list was rewritten
    assert summary["mode"] == "incremental" and summary["computed_users"] == 1 and summary["written"] == 1
    assert summary["batches"]["computed"] == 1 and summary["index_version"] == 2
    assert movie not in {m["_id"] for m in after[user][1]} and after[user] != before[user]
    assert {k for k in after if after[k] != before[k]} == {user}
    data = recommendations_of(load_current(tmp_path / "indexes", "Users.recommendations"))
    assert len(data.users) == RatingsSpec().users  # the others carried over into the new version
    with open_store(str(store_path)) as store:
        again = recommend_users(store, client, tmp_path / "indexes", config)
    assert again["computed_users"] == 0 and again["written"] == 0
    assert not again["published"] and again["index_version"] == 2


def test_an_unchanged_user_whose_document_was_replaced_gets_the_same_list_written_back_again(
        user_tower_triton, tmp_path):
    store_path, checkpoint, client = _copy(user_tower_triton, tmp_path)
    config = RecommendUsersConfig(checkpoint=checkpoint)
    with open_store(str(store_path)) as store:
        recommend_users(store, client, tmp_path / "indexes", config)
        before = _recommended(store)
        # what restoring the dump again does: the document replaced whole, without `recommended`
        store.upsert_documents("Users", [{"_key": user_key(9), "name": "User 9"}])
        assert "recommended" not in store.get_documents("Users", [user_key(9)])[0]
        summary = recommend_users(store, client, tmp_path / "indexes", config)
        after = _recommended(store)
    assert (summary["computed_users"], summary["rewritten_users"], summary["written"]) == (0, 1, 1)
    assert summary["batches"]["computed"] == 0 and not summary["published"] and summary["index_version"] == 1
    assert after == before


def test_a_served_tower_from_another_checkpoint_is_refused_in_one_line(user_tower_triton, tmp_path):
    store_path, checkpoint, client = _copy(user_tower_triton, tmp_path)
    other = load_tower(checkpoint)
    with torch.no_grad():
        other.model.movie_input.weight.mul_(2)
    other.save(tmp_path / "other.pt")
    with open_store(str(store_path)) as store, pytest.raises(ModelRepositoryError) as error:
        recommend_users(store, client, tmp_path / "indexes", RecommendUsersConfig(checkpoint=tmp_path / "other.pt"))
    assert "\n" not in str(error.value)
    assert f"does not compute what {tmp_path / 'other.pt'} does — export it with 'jobs export-models" \
        in str(error.value)


def _jobs(store_path, index_dir, triton_url, *args, kill_at: str | None = None):
    env = {k: v for k, v in os.environ.items() if k != TEST_KILL_AT.name}
    if kill_at:
        env[TEST_KILL_AT.name] = kill_at
    return subprocess.run([sys.executable, "-m", "jobs.cli", "--store", str(store_path), "--index-dir", str(index_dir),
                           "--triton-url", triton_url, *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=120)


def test_killed_run_reruns_from_its_journal_to_the_same_lists(user_tower_triton, tmp_path):
    store_path, checkpoint, client = _copy(user_tower_triton, tmp_path)
    args = ["recommend-users", "--checkpoint", checkpoint, "--batch-size", 40, "--json"]
    killed = _jobs(store_path, tmp_path / "indexes", client.url, *args, kill_at="embed:2")
    assert killed.returncode == -signal.SIGKILL
    rerun = _jobs(store_path, tmp_path / "indexes", client.url, *args)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["batches"] == {"computed": 2, "reused": 2}  # 157 rated users in batches of 40
    assert summary["index_version"] == 1 and summary["written"] == RatingsSpec().users
    with open_store(str(store_path)) as store:
        after_rerun = _recommended(store)
        recommend_with(store, in_process(load_tower(checkpoint).model), tmp_path / "local",
                       RecommendUsersConfig(checkpoint=checkpoint), {"name": "user_tower", "version": "local"})
        uninterrupted = _recommended(store)
    assert {k: [m["_key"] for m in v[1]] for k, v in after_rerun.items()} == \
        {k: [m["_key"] for m in v[1]] for k, v in uninterrupted.items()}


def _invoke(store_path, index_dir, client, *args):
    return CliRunner().invoke(jobs_cli, ["--store", str(store_path), "--index-dir", str(index_dir), "--triton-url",
                                         client.url, *map(str, args)], catch_exceptions=False)


def test_reindex_users_after_a_new_rating_recomputes_only_that_user_and_a_dry_run_says_so_first(
        user_tower_triton, tmp_path):
    store_path, checkpoint, client = _copy(user_tower_triton, tmp_path)
    index_dir = tmp_path / "indexes"
    reindex = ["reindex", "users", "--checkpoint", checkpoint, "--json"]
    first = _invoke(store_path, index_dir, client, *reindex)
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["mode"] == "full" and json.loads(first.stdout)["written"] == RatingsSpec().users
    with open_store(str(store_path)) as store:
        before = _recommended(store)
        user = user_key(7)
        movie = before[user][1][0]["_id"]
        store.upsert_documents("Ratings", [{"_key": "new-rating", "_from": f"Users/{user}", "_to": movie,
                                            "rating": 4, "timestamp": 9_999_999}])
    dry = _invoke(store_path, index_dir, client, *reindex, "--dry-run")
    assert dry.exit_code == 0, dry.output
    planned = json.loads(dry.stdout)
    assert (planned["mode"], planned["would_compute_users"], planned["would_embed_users"]) == ("incremental", 1, 1)
    assert planned["would_rewrite_users"] == 0
    assert load_current(index_dir, "Users.recommendations").version == 1  # the dry run changed nothing
    again = _invoke(store_path, index_dir, client, *reindex)
    assert again.exit_code == 0, again.output
    summary = json.loads(again.stdout)
    assert (summary["mode"], summary["computed_users"], summary["written"]) == ("incremental", 1, 1)
    assert summary["index_version"] == 2
    with open_store(str(store_path)) as store:
        after = _recommended(store)
    assert {k for k in after if after[k] != before[k]} == {user}
    assert movie not in {m["_id"] for m in after[user][1]}
    line = _invoke(store_path, index_dir, client, "reindex", "users", "--checkpoint", checkpoint)
    assert line.exit_code == 0 and line.stdout.startswith("users: incremental: computed 0 of 160 Users")
    assert "unchanged Users.recommendations v2" in line.stdout


@pytest.mark.parametrize("command", [["reindex", "users"], ["recommend-users"]])
def test_a_held_lock_stops_reindex_users_and_recommend_users_with_exit_75_and_one_line(
        user_tower_triton, tmp_path, command):
    store_path, checkpoint, client = _copy(user_tower_triton, tmp_path)
    index_dir = tmp_path / "indexes"
    lock = job_lock_path(index_dir, "Users.recommendations")
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "token": "t",
                                "heartbeat": time.time()}))
    held = _invoke(store_path, index_dir, client, *command, "--checkpoint", checkpoint)
    assert held.exit_code == EXIT_LOCK_HELD
    assert held.stderr.count("\n") == 1 and held.stderr.startswith(f"error: another run holds {lock}")
    assert f"pid {os.getpid()}" in held.stderr and "try again later" in held.stderr
    with open_store(str(store_path)) as store:  # nothing was written, nothing published
        assert not any("recommended" in user for user in store.get_documents("Users", [user_key(0), user_key(5)]))
    assert current_version(index_dir, "Users.recommendations") is None
    # a lock whose owner died (same host, pid gone) is stale: the next run takes it over
    lock.write_text(json.dumps({"pid": 2 ** 22 + 1, "host": socket.gethostname(), "token": "u",
                                "heartbeat": time.time()}))
    taken = _invoke(store_path, index_dir, client, *command, "--checkpoint", checkpoint, "--json")
    assert taken.exit_code == 0, taken.output
    assert json.loads(taken.stdout)["lock_taken_over_from"]["pid"] == 2 ** 22 + 1
    assert not lock.exists()


def test_reindex_users_refuses_an_option_of_another_target_in_one_line(user_tower_triton, tmp_path):
    store_path, checkpoint, client = _copy(user_tower_triton, tmp_path)
    result = _invoke(store_path, tmp_path / "indexes", client, "reindex", "users", "--edges", "x")
    assert result.exit_code == 1
    assert result.stderr == "error: --edges does not apply to 'jobs reindex users' (it is an option of reindex " \
                            "products)\n"
    result = _invoke(store_path, tmp_path / "indexes", client, "reindex", "movies", "--ratings", "x")
    assert result.exit_code == 1 and "--ratings does not apply to 'jobs reindex movies'" in result.stderr
