import numpy as np

from graphsvc.evaluation.leave_one_out import (
    item_knn_scorer,
    popularity_scorer,
    ranking_quality,
)
from graphsvc.recommend.ratings import RatingHistories
from graphsvc.recommend.training import TrainSettings, tower_scorer, train_tower


def _histories(lists, movies):
    import pyarrow as pa

    indptr = np.concatenate([[0], np.cumsum([len(x) for x in lists])])
    flat = np.array([m for x in lists for m in x], np.int64)
    return RatingHistories(pa.array([f"u{i}" for i in range(len(lists))]), pa.array([f"m{i}" for i in range(movies)]),
                           "movies", indptr, flat, np.full(len(flat), 4.0, np.float32), np.arange(len(flat)))


def test_hit_rate_and_ndcg_rank_only_unrated_movies_and_ties_count_against_the_held_out_one():
    known = _histories([[0, 1], [0]], movies=4)
    held = np.array([2, 3])
    scores = np.array([[9, 9, 5, 1], [9, 0, 1, 1]], np.float32)  # user 0: 2 is first among unrated {2, 3}
    quality = ranking_quality(lambda users: scores[users], known, held, k=1)
    assert quality.users == 2
    assert quality.hit_rate == 0.5  # user 1: movie 3 ties with movie 2 → rank 1, not a hit at k=1
    assert quality.ndcg == 0.5
    constant = ranking_quality(lambda users: np.zeros((len(users), 4)), known, held, k=1)
    assert constant.hit_rate == 0.0


def test_item_knn_scores_by_cosine_of_co_rating_and_popularity_by_counts():
    known = _histories([[0, 1], [0, 1], [0, 2], [1]], movies=3)
    scores = item_knn_scorer(known)(np.array([3]))  # user 3 rated movie 1
    # sim(1, 0) = 2 / sqrt(3·3); sim(1, 2) = 0
    np.testing.assert_allclose(scores[0], [2 / 3, 0, 0], atol=1e-6)
    assert popularity_scorer(known)(np.array([0]))[0].tolist() == [3, 3, 1]


def test_tower_learns_planted_tastes_beyond_popularity(tmp_path):
    from graphsvc.recommend.ratings import load_ratings
    from graphsvc.store import open_store
    from tests.recommend.ratings_graph import write_ratings_graph

    write_ratings_graph(tmp_path / "s.duckdb")
    with open_store(str(tmp_path / "s.duckdb")) as store:
        train, test = load_ratings(store).without_latest()
    fit, valid = train.without_latest()
    model, report = train_tower(fit, valid, TrainSettings(max_steps=600, check_every=100, patience=300))
    ours = ranking_quality(tower_scorer(model, train, 100), train, test)
    popular = ranking_quality(popularity_scorer(train), train, test)
    assert report["best_step"] >= 100 and report["validation"]["users"] == ours.users == 157
    assert ours.hit_rate > popular.hit_rate + 0.1, (ours, popular)
