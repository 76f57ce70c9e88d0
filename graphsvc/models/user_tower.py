"""The user tower: a user is the rating- and recency-weighted mean of the vectors of the
movies they rated, passed through a small learned residual layer — one GraphSAGE-style
hop from movies to users over the rating graph, with no free per-user embedding. So the
model is inductive: a new user, or a new rating, changes that user's vector only, and is
answered without retraining.

Scores are inner products `user · movie`: the tower returns [u, 1] and the movie side
(`movie_vectors`) [m, bias_m], so one FAISS inner-product index over the movie vectors
ranks exactly as the model does (the bias is the movie's learned popularity).

Input (what Triton receives, batched): `movies` [B, W] int64 positions in the model's
movie list, most recent first; `ratings` [B, W] float32 star ratings, 0 for padding.
Each rating's weight is exp(w[star level]) · (1 + recency rank)^-decay, both learned.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import nn

from graphsvc.errors import ModelRepositoryError

MOVIES = "movies__0"
RATINGS = "ratings__1"
USER_VECTOR = "user_vector__0"
STAR_LEVELS = 5


@dataclass(frozen=True)
class TowerSettings:
    dim: int = 32
    history: int = 100  # the latest ratings a user vector is made of


class UserTower(nn.Module):
    def __init__(self, num_movies: int, dim: int = 32):
        super().__init__()
        self.movie_input = nn.Embedding(num_movies, dim)  # a movie as a user's rating of it
        self.movie_output = nn.Embedding(num_movies, dim)  # a movie as a candidate
        self.movie_bias = nn.Parameter(torch.zeros(num_movies))
        self.level_weight = nn.Parameter(torch.zeros(STAR_LEVELS + 1))  # level 0: padding, masked anyway
        self.decay = nn.Parameter(torch.zeros(1))
        self.layer = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, dim))
        nn.init.normal_(self.movie_input.weight, std=0.05)
        nn.init.normal_(self.movie_output.weight, std=0.05)

    def forward(self, movies: torch.Tensor, ratings: torch.Tensor) -> torch.Tensor:
        level = ratings.round().clamp(0, self.level_weight.shape[0] - 1).long()
        recency = torch.arange(movies.shape[1], dtype=torch.float32, device=movies.device)
        weight = torch.exp(self.level_weight[level] - F.softplus(self.decay) * torch.log1p(recency))
        weight = weight * (ratings > 0).float()
        weight = weight / weight.sum(1, keepdim=True).clamp_min(1e-6)
        pooled = (weight.unsqueeze(-1) * self.movie_input(movies)).sum(1)
        user = pooled + self.layer(pooled)
        return torch.cat([user, torch.ones_like(user[:, :1])], dim=1)

    @torch.jit.export
    def movie_vectors(self) -> torch.Tensor:
        return torch.cat([self.movie_output.weight, self.movie_bias.unsqueeze(1)], dim=1)


@dataclass
class TowerCheckpoint:
    """A trained tower with what it needs beside its weights: the movie list its
    positions refer to, their popularity in training (the answer for users with no
    ratings) and the training report."""

    model: UserTower
    settings: TowerSettings
    movie_keys: pa.Array
    movie_collection: str
    popularity: torch.Tensor  # int64 ratings per movie
    report: dict

    def save(self, path: Path) -> Path:
        from graphsvc.files import atomic_path

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save({"kind": "user_tower", "settings": asdict(self.settings), "state_dict": self.model.state_dict(),
                        "movie_keys": self.movie_keys.to_pylist(), "movie_collection": self.movie_collection,
                        "popularity": self.popularity, "report": self.report}, tmp)
        return path


def load_tower(path: Path) -> TowerCheckpoint:
    """ModelRepositoryError naming the file when it is missing or not a user tower."""
    path = Path(path)
    if not path.is_file():
        raise ModelRepositoryError(f"{path}: no user tower checkpoint — train one with 'jobs train-recommender'")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelRepositoryError(f"{path}: cannot read the checkpoint: {exc}") from None
    if not isinstance(data, dict) or data.get("kind") != "user_tower":
        raise ModelRepositoryError(f"{path}: not a user tower checkpoint (made by 'jobs train-recommender')")
    settings = TowerSettings(**data["settings"])
    model = UserTower(len(data["movie_keys"]), settings.dim)
    model.load_state_dict(data["state_dict"])
    return TowerCheckpoint(model.eval(), settings, pa.array(data["movie_keys"], pa.string()),
                           data["movie_collection"], data["popularity"], data.get("report") or {})


def in_process(model: UserTower):
    """The tower in this process as a Triton model's `infer_many` (requests of named
    arrays in, {output: array} out, in order): what the job's Triton path is measured
    and tested against."""

    def infer_many(requests):
        for request in requests:
            with torch.inference_mode():
                vectors = model(torch.from_numpy(request[MOVIES]), torch.from_numpy(request[RATINGS]))
            yield {USER_VECTOR: vectors.numpy()}

    return infer_many
