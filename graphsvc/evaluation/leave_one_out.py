"""Leave-one-out ranking of held-out ratings: each user's latest rating is hidden, every
movie the user has not rated in training is ranked (full ranking, no sampled negatives),
and the hidden movie's rank gives hit rate@k and NDCG@k. Baselines computed on the same
split: popularity, and item-kNN collaborative filtering (cosine item–item similarity on
the training interactions, k neighbours per item and a shrinkage tuned on a validation
split carved from training only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from graphsvc.recommend.ratings import RatingHistories

#: a scorer: users (positions) → scores [users, movies]
Scorer = Callable[[np.ndarray], np.ndarray]

# item-kNN's grid: neighbours per item (0: all) × shrinkage of the cosine's denominator
KNN_NEIGHBOURS = (10, 20, 50, 100, 200, 0)
KNN_SHRINK = (0.0, 10.0, 100.0)


@dataclass(frozen=True)
class RankingQuality:
    hit_rate: float
    ndcg: float
    users: int

    def to_dict(self) -> dict:
        return {"hit_rate": round(self.hit_rate, 6), "ndcg": round(self.ndcg, 6), "users": self.users}


def held_out_ranks(score: Scorer, known: RatingHistories, held: np.ndarray, block: int = 1024) -> np.ndarray:
    """The rank (0 = first) of each user's held-out movie among the movies the user has
    not rated in `known`, for the users with one held out and a training history. Ties
    count against the held-out movie, so a constant scorer finds nothing."""
    users = np.flatnonzero((held >= 0) & (known.degrees() > 0))
    ranks = []
    for start in range(0, len(users), block):
        chunk = users[start:start + block]
        scores = np.array(score(chunk), np.float32, copy=True)
        degrees = known.degrees()[chunk]
        owner = np.repeat(np.arange(len(chunk)), degrees)
        rated = np.concatenate([known.rated(u) for u in chunk]) if len(owner) else np.zeros(0, np.int64)
        scores[owner, rated] = -np.inf
        target = scores[np.arange(len(chunk)), held[chunk]]
        ranks.append((scores >= target[:, None]).sum(axis=1) - 1)
    return np.concatenate(ranks) if ranks else np.zeros(0, np.int64)


def ranking_quality(score: Scorer, known: RatingHistories, held: np.ndarray, k: int = 10) -> RankingQuality:
    ranks = held_out_ranks(score, known, held)
    if not len(ranks):
        return RankingQuality(0.0, 0.0, 0)
    hit = ranks < k
    return RankingQuality(float(hit.mean()), float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean()), len(ranks))


def popularity_scorer(known: RatingHistories) -> Scorer:
    counts = known.popularity().astype(np.float32)
    return lambda users: np.broadcast_to(counts, (len(users), len(counts)))


def _interactions(known: RatingHistories) -> torch.Tensor:
    """The users × movies 0/1 matrix (dense: an evaluation's catalogue is thousands of movies)."""
    dense = torch.zeros(known.num_users, known.num_movies)
    dense[torch.from_numpy(np.repeat(np.arange(known.num_users), known.degrees())), torch.from_numpy(known.movies)] = 1
    return dense


def item_knn_scorer(known: RatingHistories, neighbours: int = 0, shrink: float = 0.0) -> Scorer:
    """score(u, i) = Σ over u's movies j of sim(j, i), sim the cosine of the items'
    user columns (with `shrink` added to its denominator), keeping for each item i only
    its `neighbours` most similar items (0: all)."""
    dense = _interactions(known)
    co = dense.T @ dense  # [movies, movies] co-rating counts
    norms = dense.sum(0).sqrt()
    similarity = co / (norms[:, None] * norms[None, :] + shrink + 1e-9)
    similarity.fill_diagonal_(0)
    if 0 < neighbours < known.num_movies:
        top = similarity.topk(neighbours, dim=0)
        similarity = torch.zeros_like(similarity).scatter_(0, top.indices, top.values)
    scores = (dense @ similarity).numpy()
    return lambda users: scores[users]


def tuned_item_knn(train: RatingHistories, k: int = 10) -> tuple[dict, Callable[[RatingHistories], Scorer]]:
    """Item-kNN's neighbours and shrinkage chosen by NDCG@k on a validation split carved
    from `train` (each user's latest training rating): (the grid's results and the
    choice, a maker of the tuned scorer for other histories)."""
    fit, valid = train.without_latest()
    grid = []
    for neighbours in KNN_NEIGHBOURS:
        for shrink in KNN_SHRINK:
            quality = ranking_quality(item_knn_scorer(fit, neighbours, shrink), fit, valid, k)
            grid.append({"neighbours": neighbours, "shrink": shrink, **quality.to_dict()})
    best = max(grid, key=lambda row: (row["ndcg"], row["hit_rate"]))
    chosen = {"neighbours": best["neighbours"], "shrink": best["shrink"]}
    return {"chosen": chosen, "validation": grid}, lambda known: item_knn_scorer(known, **chosen)
