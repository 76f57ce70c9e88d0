import numpy as np
import pytest

from graphsvc.errors import ConfigError
from graphsvc.recommend.ratings import load_ratings
from graphsvc.store import open_store


def _store(tmp_path, ratings, users=("a", "b", "c")):
    path = tmp_path / "s.duckdb"
    with open_store(str(path), create=True) as store:
        store.create_collection("Users")
        store.create_collection("Ratings", "edge")
        store.upsert_documents("Users", [{"_key": u} for u in users])
        store.upsert_documents("Ratings", ratings)
    return path


def _r(key, user, movie, rating, ts, movies="movies"):
    return {"_key": key, "_from": f"Users/{user}", "_to": f"{movies}/{movie}", "rating": rating, "timestamp": ts}


def test_histories_are_in_time_order_ties_by_edge_key_and_a_repeated_rating_keeps_the_later(tmp_path):
    path = _store(tmp_path, [
        _r("e3", "a", "x", 2, 10), _r("e1", "a", "y", 5, 10), _r("e2", "a", "z", 4, 5),
        _r("e4", "a", "x", 1, 20),  # a's second rating of x: the later one wins
        _r("e5", "b", "y", 3, 7),
    ])
    with open_store(str(path)) as store:
        h = load_ratings(store)
    assert h.user_keys.to_pylist() == ["a", "b", "c"] and h.movie_keys.to_pylist() == ["x", "y", "z"]
    assert h.movie_collection == "movies"
    assert h.degrees().tolist() == [3, 1, 0]
    assert [h.movie_keys[m].as_py() for m in h.rated(0)] == ["z", "y", "x"]  # 5, 10 (e1 < e3), 20
    assert h.ratings[:3].tolist() == [4, 5, 1] and h.popularity().tolist() == [1, 2, 1]

    train, held = h.without_latest()
    assert held.tolist() == [0, -1, -1]  # b has one rating: kept whole, nothing held out
    assert train.degrees().tolist() == [2, 1, 0]
    movies, ratings = h.window(np.array([0, 1, 2]), 2)
    assert movies.tolist() == [[0, 1], [1, 0], [0, 0]] and ratings.tolist() == [[1, 5], [3, 0], [0, 0]]

    known = h.on_vocabulary(h.movie_keys.take([1, 0]))  # a model that knows y and x only
    assert known.degrees().tolist() == [2, 1, 0] and known.rated(0).tolist() == [0, 1]


def test_ratings_into_two_movie_collections_are_refused_naming_them(tmp_path):
    path = _store(tmp_path, [_r("e1", "a", "x", 2, 1), _r("e2", "a", "y", 2, 2, movies="shows")])
    with open_store(str(path)) as store, pytest.raises(ConfigError, match=r"several collections \['movies', 'shows'\]"):
        load_ratings(store)
