"""Training the user tower (`graphsvc.models.user_tower`) on rating histories.

Each step takes a batch of users and, for each, a random point in their history: the
ratings before it are the input, the movie rated at it the target, scored against every
movie (full softmax: the catalogue is small beside a step's arithmetic). So the model
learns what a user rates *next* from what they rated before — what a recommendation is
asked for, and what the leave-one-out evaluation measures. Early stopping on NDCG@k of a
validation split (each user's latest rating, never seen as a target or an input).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from graphsvc.evaluation.leave_one_out import RankingQuality, Scorer, ranking_quality
from graphsvc.models.user_tower import TowerSettings, UserTower
from graphsvc.recommend.ratings import RatingHistories


@dataclass(frozen=True)
class TrainSettings:
    dim: int = 32
    history: int = 100
    batch_size: int = 256
    learning_rate: float = 3e-3
    max_steps: int = 3000
    check_every: int = 100  # steps between validation checks
    patience: int = 800  # steps without a better validation NDCG before stopping
    k: int = 10
    seed: int = 0
    threads: int = 1  # torch CPU threads (the batches are small: more threads mostly wait)

    @property
    def tower(self) -> TowerSettings:
        return TowerSettings(dim=self.dim, history=self.history)


def tower_scorer(model: UserTower, histories: RatingHistories, history: int) -> Scorer:
    """Scores of every movie for users, from their histories in `histories`."""
    movies = model.movie_vectors().detach()

    def score(users: np.ndarray) -> np.ndarray:
        ids, ratings = histories.window(users, history)
        with torch.inference_mode():
            return (model(torch.from_numpy(ids), torch.from_numpy(ratings)) @ movies.T).numpy()

    return score


def train_tower(fit: RatingHistories, valid: np.ndarray, settings: TrainSettings = TrainSettings(),
                on_check: Callable[[dict], None] | None = None) -> tuple[UserTower, dict]:
    """A tower trained on `fit`, the weights of its best validation check (`valid`: each
    user's held-out movie or -1), and the training report."""
    started = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        torch.manual_seed(settings.seed)
        rng = np.random.default_rng(settings.seed)
        model = UserTower(fit.num_movies, settings.dim)
        optimiser = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
        degrees = fit.degrees()
        eligible = np.flatnonzero(degrees >= 2)
        if not len(eligible):
            raise ValueError("no user has two ratings to learn from")
        best: tuple[float, int, dict, RankingQuality | None] = (-1.0, 0, {}, None)
        history = []
        for step in range(1, settings.max_steps + 1):
            model.train()
            users = rng.choice(eligible, settings.batch_size)
            cut = rng.integers(1, degrees[users])
            ids, ratings = fit.window(users, settings.history, cut=cut)
            target = torch.from_numpy(fit.movies[fit.indptr[users] + cut])
            logits = model(torch.from_numpy(ids), torch.from_numpy(ratings)) @ model.movie_vectors().T
            loss = F.cross_entropy(logits, target)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            if step % settings.check_every == 0:
                model.eval()
                quality = ranking_quality(tower_scorer(model, fit, settings.history), fit, valid, settings.k)
                record = {"step": step, "loss": round(loss.item(), 4), **quality.to_dict()}
                history.append(record)
                if on_check:
                    on_check(record)
                if quality.ndcg > best[0]:
                    best = (quality.ndcg, step, {k: v.clone() for k, v in model.state_dict().items()}, quality)
                elif step - best[1] >= settings.patience:
                    break
        model.load_state_dict(best[2])
        report = {"settings": asdict(settings), "best_step": best[1], "steps": step,
                  "validation": best[3].to_dict() if best[3] else None, "history": history,
                  "seconds": round(time.perf_counter() - started, 1)}
        return model.eval(), report
    finally:
        torch.set_num_threads(threads)
