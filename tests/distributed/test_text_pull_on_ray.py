"""The texts of `embed-movies` / `reindex movies` pulled on Ray (issue 14): one read task per
key range, `description` else `title`, the documents with neither (or only blanks) left out
— the same keys, texts and count skipped as the local `load_texts`, in key order. The
embedded store is real (its read tasks open the file read-only); ArangoDB is the request
harness, opened inside each worker, whose requests are checked against the manual's schemas."""

from __future__ import annotations

import json

import numpy as np
import pytest

from graphsvc.distributed.pull import pull_texts_on_ray
from graphsvc.errors import StoreError
from graphsvc.graph.datasets import load_texts
from graphsvc.store import open_store
from graphsvc.store.arango import aql
from jobs.synth import MOVIES_SOURCE
from tests.distributed.arango_workers import StubAddress, recorded
from tests.store.arango.harness import ArangoStub
from tests.store.arango.routes_store import serve_key_ranges

pytest.importorskip("ray")


def catalogue(count: int = 120) -> list[dict]:
    """Sample movies, every 7th without a description (its title stands in), every 11th
    with neither or a blank one (skipped)."""
    movies = [json.loads(line) for line in MOVIES_SOURCE.read_text().splitlines()]
    out = []
    for i in range(count):
        movie = {**movies[i % len(movies)], "_key": f"m{i:04d}"}
        if i % 7 == 3:
            del movie["description"]
        if i % 11 == 5:
            movie.pop("description", None)
            movie["title"] = "   " if i % 2 else None
        out.append(movie)
    return out


def write_movies(path, movies: list[dict]):
    with open_store(str(path), create=True) as store:
        store.create_collection("movies")
        store.upsert_documents("movies", movies)
    return path


def by_key(pulled):
    keys, texts, skipped = pulled
    order = np.argsort(keys.to_pylist(), kind="stable")
    return [keys[int(i)].as_py() for i in order], [texts[i] for i in order], skipped


def test_the_ray_text_pull_equals_the_local_pull_in_key_order(local_ray, tmp_path):
    movies = catalogue()
    shuffled = [movies[i] for i in np.random.default_rng(0).permutation(len(movies))]
    # loaded in key order, a full scan meets the keys in key order: equal, order included
    write_movies(tmp_path / "ordered.duckdb", movies)
    with open_store(str(tmp_path / "ordered.duckdb")) as store:
        local = load_texts(store, "movies", "description", "title")
        pulled, report = pull_texts_on_ray(store, "movies", "description", "title", readers=2)
        # the driver let go of the file for its readers; its next call opens it again
        assert store.collection("movies").count == len(movies)
    assert report["where"] == "ray" and report["readers"] == 2 and report["ranges"] == 4
    assert pulled[0].to_pylist() == local[0].to_pylist() and pulled[1:] == local[1:]
    assert pulled[2] == 11 and pulled[1][3] == movies[3]["title"]  # m0003: its title stands in

    # loaded in another order: the local pull follows the scan, the Ray pull the keys
    write_movies(tmp_path / "shuffled.duckdb", shuffled)
    with open_store(str(tmp_path / "shuffled.duckdb")) as store:
        scanned = load_texts(store, "movies", "description", "title")
        keyed, _ = pull_texts_on_ray(store, "movies", "description", "title", readers=2)
    assert keyed[0].to_pylist() == sorted(keyed[0].to_pylist()) != scanned[0].to_pylist()
    assert by_key(keyed) == by_key(scanned) == by_key(local)


def test_on_arangodb_each_text_read_task_streams_one_key_range_with_documented_requests(local_ray, tmp_path):
    movies = catalogue(300)
    # the harness answers null for an attribute a document lacks, as ArangoDB does
    served = [{k: v for k, v in m.items() if v is not None} for m in movies]
    driver = ArangoStub()
    serve_key_ranges(driver, {"movies": served})
    address = StubAddress(str(tmp_path), {"movies": served}, coordinators=2)
    pulled, report = pull_texts_on_ray(driver.store(), "movies", "description", "title", readers=1,
                                       address=address)

    with open_store(str(write_movies(tmp_path / "same.duckdb", movies))) as embedded:
        expected = load_texts(embedded, "movies", "description", "title")
    assert pulled[0].to_pylist() == expected[0].to_pylist() and pulled[1:] == expected[1:]
    # one reader per coordinator: 2 at once, 4 ranges
    assert report["readers"] == 2 and report["ranges"] == 4
    sent = recorded(tmp_path)
    assert [v for request in sent for v in request["violations"]] == []
    opened = [r["body"] for r in sent if r["endpoint"] == "/_api/cursor"]
    assert sorted(b["query"] for b in opened) == sorted([aql.PULL_KEY_RANGE] * 3 + [aql.PULL_KEY_RANGE_FROM])
    assert all(b["options"]["stream"] is True for b in opened)
    assert all(b["bindVars"]["attributes"] == ["_key", "description", "title"] for b in opened)


def test_texts_no_worker_can_open_are_pulled_on_the_driver_and_none_at_all_is_one_clear_error(local_ray,
                                                                                                tmp_path):
    with open_store(":memory:") as store:
        store.create_collection("movies")
        store.upsert_documents("movies", [{"_key": "b", "title": "B"}, {"_key": "a", "description": "A"}])
        (keys, texts, skipped), report = pull_texts_on_ray(store, "movies", "description", "title")
    assert report["where"] == "driver" and "cannot be opened by another process" in report["reason"]
    assert sorted(zip(keys.to_pylist(), texts)) == [("a", "A"), ("b", "B")] and skipped == 0

    write_movies(tmp_path / "blank.duckdb", [{"_key": f"m{i}", "title": " "} for i in range(3)])
    with open_store(str(tmp_path / "blank.duckdb")) as store, pytest.raises(StoreError) as error:
        pull_texts_on_ray(store, "movies", "description", "title", readers=1)
    assert str(error.value) == "collection 'movies' has no documents with 'description' or 'title'"
