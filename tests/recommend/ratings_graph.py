"""A seeded user–movie rating graph with planted tastes, in a real embedded store: movies
in genres, each user fond of one or two genres, rating mostly those movies (higher), in
time order; a few users with no ratings at all."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from graphsvc.store import open_store

GENRES = ["Drama", "Comedy", "Horror", "SciFi", "Western", "Musical"]


@dataclass(frozen=True)
class RatingsSpec:
    users: int = 160
    movies: int = 120
    unrated_users: int = 3
    min_ratings: int = 8
    max_ratings: int = 30
    seed: int = 11


def user_key(i: int) -> str:
    return f"u{i:04d}"


def movie_key(i: int) -> str:
    return f"m{i:04d}"


def write_ratings_graph(store_path: Path, spec: RatingsSpec = RatingsSpec()) -> dict:
    """Users, movies (with `genre` and `year`) and Ratings edges; returns the users' liked genres."""
    rng = np.random.default_rng(spec.seed)
    genre_of = rng.integers(0, len(GENRES), spec.movies)
    weight = rng.pareto(3.0, spec.movies) + 0.5  # some movies are far more popular
    liked = {}
    ratings, edge = [], 0
    for u in range(spec.users):
        likes = rng.choice(len(GENRES), size=rng.integers(1, 3), replace=False)
        liked[user_key(u)] = [GENRES[g] for g in likes]
        if u >= spec.users - spec.unrated_users:
            continue
        p = weight * np.where(np.isin(genre_of, likes), 20.0, 1.0)
        count = int(rng.integers(spec.min_ratings, spec.max_ratings + 1))
        chosen = rng.choice(spec.movies, size=count, replace=False, p=p / p.sum())
        for step, m in enumerate(chosen):
            stars = int(np.clip(rng.normal(4.3 if genre_of[m] in likes else 2.2, 0.7), 1, 5).round())
            ratings.append({"_key": f"r{edge:06d}", "_from": f"Users/{user_key(u)}", "_to": f"movies/{movie_key(m)}",
                            "rating": stars, "timestamp": 1_000_000 + 1000 * step + u})
            edge += 1
    with open_store(str(store_path), create=True) as store:
        store.create_collection("Users")
        store.create_collection("movies")
        store.create_collection("Ratings", "edge")
        store.upsert_documents("Users", [{"_key": user_key(u), "name": f"User {u}"} for u in range(spec.users)])
        store.upsert_documents("movies", [{"_key": movie_key(m), "title": f"Movie {m}", "genre": GENRES[genre_of[m]],
                                           "year": 1950 + m % 60} for m in range(spec.movies)])
        store.upsert_documents("Ratings", ratings)
    return liked
