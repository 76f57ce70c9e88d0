"""`jobs train-recommender`: the store's ratings → a trained user tower checkpoint.

Recipe: pull users and their ratings in time order → hold out each user's latest rating
as the validation split → train the tower (`graphsvc.recommend.training`), early-stopped
on validation NDCG@k → save the checkpoint (weights, movie list, popularity, report),
which `jobs export-models --user-tower` puts into the Triton repository and
`jobs recommend-users` reads the movie vectors from. `jobs evaluate users` measures the
same model on a split that also holds out a test rating.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from graphsvc.errors import ConfigError
from graphsvc.models.user_tower import TowerCheckpoint
from graphsvc.recommend.ratings import load_ratings
from graphsvc.recommend.training import TrainSettings, train_tower
from graphsvc.store.base import GraphStore


@dataclass(frozen=True)
class TrainRecommenderConfig:
    users: str = "Users"
    ratings: str = "Ratings"
    rating: str = "rating"
    timestamp: str = "timestamp"
    out: Path = Path("checkpoints/user_tower.pt")
    settings: TrainSettings = TrainSettings()


def train_recommender(store: GraphStore, config: TrainRecommenderConfig = TrainRecommenderConfig(),
                      on_check: Callable[[dict], None] | None = None) -> dict:
    histories = load_ratings(store, config.users, config.ratings, config.rating, config.timestamp)
    store.release()
    if not len(histories.movies):
        raise ConfigError(f"'{config.ratings}' holds no ratings of '{config.users}' to train on")
    fit, valid = histories.without_latest()
    model, report = train_tower(fit, valid, config.settings, on_check)
    report |= {"users": histories.num_users, "movies": histories.num_movies, "ratings": int(len(histories.movies)),
               "validation_split": "each user's latest rating (users with two or more)"}
    TowerCheckpoint(model, config.settings.tower, histories.movie_keys, histories.movie_collection,
                    torch.from_numpy(histories.popularity()), report).save(config.out)
    return {"checkpoint": str(config.out), **{k: v for k, v in report.items() if k != "history"}}
