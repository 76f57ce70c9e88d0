"""`jobs evaluate users`: what the user recommendations are worth, beside popularity and
item-kNN on the same split in the same run, as report.json + index.html.

Recipe: pull users and their ratings in time order → test: each user's latest rating
(ties by edge key); validation: the latest of the rest; training: the others → item-kNN's
neighbours and shrinkage tuned on validation, the tower trained on training and
early-stopped on validation (the same data for both; neither sees a test rating) →
every method ranks, for each user, every movie not rated in training+validation, and the
test movie's rank gives hit rate@k and NDCG@k → report.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from graphsvc.evaluation.leave_one_out import popularity_scorer, ranking_quality, tuned_item_knn
from graphsvc.evaluation.report import write_report
from graphsvc.recommend.ratings import load_ratings
from graphsvc.recommend.training import TrainSettings, tower_scorer, train_tower
from graphsvc.runs.timing import PhaseTimer
from graphsvc.store.base import GraphStore


@dataclass(frozen=True)
class EvaluateUsersConfig:
    users: str = "Users"
    ratings: str = "Ratings"
    rating: str = "rating"
    timestamp: str = "timestamp"
    out: Path = Path("var/evaluation/users")
    k: int = 10
    settings: TrainSettings = TrainSettings()


def evaluate_users(store: GraphStore, config: EvaluateUsersConfig = EvaluateUsersConfig()) -> dict:
    timer = PhaseTimer()
    with timer("pull"):
        histories = load_ratings(store, config.users, config.ratings, config.rating, config.timestamp)
    store.release()
    train, test = histories.without_latest()
    fit, valid = train.without_latest()
    with timer("item_knn"):
        knn, knn_for = tuned_item_knn(train, config.k)
        item_knn = ranking_quality(knn_for(train), train, test, config.k)
    with timer("popularity"):
        popularity = ranking_quality(popularity_scorer(train), train, test, config.k)
    with timer("tower"):
        model, training = train_tower(fit, valid, TrainSettings(**{**config.settings.__dict__, "k": config.k}))
        tower = ranking_quality(tower_scorer(model, train, config.settings.history), train, test, config.k)
    methods = {"popularity": popularity.to_dict(), "item-kNN": item_knn.to_dict(), "user tower": tower.to_dict()}
    beats = all(tower.hit_rate > m.hit_rate and tower.ndcg > m.ndcg for m in (popularity, item_knn))
    report = {
        "target": "users",
        "users": config.users,
        "ratings": config.ratings,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "num_users": histories.num_users,
        "num_movies": histories.num_movies,
        "num_ratings": int(len(histories.movies)),
        "k": config.k,
        "methods": methods,
        "user_tower_beats_both": beats,
        "item_knn_tuning": knn,
        "training": {key: value for key, value in training.items() if key != "history"},
        "note": (f"Leave-one-out: each user's latest rating (by timestamp, ties by edge key) is the test item; the "
                 f"latest of the rest is the validation item that tunes item-kNN (neighbours × shrinkage, by "
                 f"NDCG@{config.k}) and early-stops the tower. Every movie the user has not rated in training or "
                 f"validation is ranked (full ranking, no sampled negatives); ties count against the test item."),
        "seconds": timer.summary(),
    }
    written = write_report(config.out, report)
    report["files"] = {name: str(path) for name, path in written.items()}
    return report
