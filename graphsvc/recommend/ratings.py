"""Each user's rating history, in time order, from a users collection and a ratings edge
collection (`Users/* -> movies/*` with a `rating` and a `timestamp`), as CSR arrays.

A user who rated a movie twice keeps the later rating (the workshop's dump holds 167 such
repeats). Ties in time are broken by the edge key, so the order — and the held-out
"latest" rating of an evaluation — is the same on every run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from graphsvc.errors import ConfigError
from graphsvc.store.base import GraphStore

#: a rating edge without a rating counts as this (a neutral star level)
MISSING_RATING = 3.0


@dataclass(frozen=True)
class RatingHistories:
    """Users (every document of the users collection, rated or not) and their ratings in
    time order: user u's ratings are rows `indptr[u]:indptr[u+1]` of `movies` (positions
    in `movie_keys`), `ratings` and `timestamps`."""

    user_keys: pa.Array  # string
    movie_keys: pa.Array  # string, sorted: the movies' `_key`s in `movie_collection`
    movie_collection: str
    indptr: np.ndarray  # int64 [users + 1]
    movies: np.ndarray  # int64 [ratings]
    ratings: np.ndarray  # float32 [ratings]
    timestamps: np.ndarray  # int64 [ratings]

    @property
    def num_users(self) -> int:
        return len(self.user_keys)

    @property
    def num_movies(self) -> int:
        return len(self.movie_keys)

    def degrees(self) -> np.ndarray:
        return np.diff(self.indptr)

    def rated(self, user: int) -> np.ndarray:
        return self.movies[self.indptr[user]:self.indptr[user + 1]]

    def popularity(self) -> np.ndarray:
        """Ratings per movie."""
        return np.bincount(self.movies, minlength=self.num_movies)

    def keep(self, mask: np.ndarray) -> "RatingHistories":
        """The histories with only the ratings where `mask` is true (order kept)."""
        indptr = np.concatenate([[0], np.cumsum(mask, dtype=np.int64)])[self.indptr]
        return RatingHistories(self.user_keys, self.movie_keys, self.movie_collection, indptr, self.movies[mask],
                               self.ratings[mask], self.timestamps[mask])

    def without_latest(self) -> tuple["RatingHistories", np.ndarray]:
        """(the histories less the latest rating of each user with at least two, that
        latest movie per user — -1 for a user with fewer, whose history stays whole)."""
        held = np.full(self.num_users, -1, np.int64)
        has = np.flatnonzero(self.degrees() >= 2)
        last = self.indptr[1:][has] - 1
        held[has] = self.movies[last]
        mask = np.ones(len(self.movies), bool)
        mask[last] = False
        return self.keep(mask), held

    def on_vocabulary(self, movie_keys: pa.Array) -> "RatingHistories":
        """The same histories over another movie list (a model's): ratings of movies it
        does not hold are left out."""
        positions = pc.index_in(self.movie_keys, value_set=movie_keys).to_numpy(zero_copy_only=False)
        mapped = np.where(np.isnan(positions.astype(np.float64)), -1, positions).astype(np.int64)[self.movies] \
            if len(self.movies) else np.zeros(0, np.int64)
        known = mapped >= 0
        kept = self.keep(known)
        return RatingHistories(self.user_keys, movie_keys, self.movie_collection, kept.indptr, mapped[known],
                               kept.ratings, kept.timestamps)

    def window(self, users: np.ndarray, length: int, cut: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The model's input for `users`: their latest `length` ratings before position
        `cut` (default: all), most recent first — movie positions [B, W] and ratings
        [B, W], W the longest such window in the batch, 0-rated padding after."""
        users = np.asarray(users, np.int64)
        ends = self.indptr[users] + (self.degrees()[users] if cut is None else cut)
        sizes = np.minimum(ends - self.indptr[users], length)
        width = max(int(sizes.max()) if len(sizes) else 0, 1)
        back = np.arange(width)[None, :]
        valid = back < sizes[:, None]
        rows = np.where(valid, ends[:, None] - 1 - back, 0)
        movies = np.where(valid, self.movies[rows] if len(self.movies) else 0, 0)
        ratings = np.where(valid, self.ratings[rows] if len(self.ratings) else 0, 0).astype(np.float32)
        return movies.astype(np.int64), ratings


def load_ratings(store: GraphStore, users: str = "Users", ratings: str = "Ratings", rating: str = "rating",
                 timestamp: str = "timestamp") -> RatingHistories:
    """The users of `users` and their ratings from the edges of `ratings` (`_from` a user,
    `_to` a movie, one movie collection). ConfigError names the collection when the edges
    point elsewhere."""
    user_table = pa.Table.from_batches(list(store.pull(users, {})), schema=pa.schema([("_key", pa.string())]))
    user_keys = user_table.column("_key").combine_chunks()
    schema = pa.schema([("_key", pa.string()), ("_from", pa.string()), ("_to", pa.string()),
                        (rating, pa.float64()), (timestamp, pa.int64())])
    pulled = store.pull(ratings, {name: schema.field(name).type for name in schema.names[1:]})
    edges = pa.Table.from_batches(list(pulled), schema=schema)
    if edges.num_rows and edges.column("_from").null_count:
        raise ConfigError(f"'{ratings}' is not an edge collection (its documents have no _from/_to)")
    from_parts = pc.split_pattern(edges.column("_from"), "/", max_splits=1)
    to_parts = pc.split_pattern(edges.column("_to"), "/", max_splits=1)
    from_collections = pc.unique(pc.list_element(from_parts, 0)).to_pylist()
    to_collections = pc.unique(pc.list_element(to_parts, 0)).to_pylist()
    if edges.num_rows and from_collections != [users]:
        raise ConfigError(f"'{ratings}' edges start in {from_collections}, expected only '{users}' "
                          f"(--users names the collection the ratings come from)")
    if len(to_collections) > 1:
        raise ConfigError(f"'{ratings}' edges end in several collections {sorted(to_collections)}: "
                          "recommendations need one movie collection")
    movie_collection = to_collections[0] if to_collections else ""
    user_of = pc.index_in(pc.list_element(from_parts, 1), value_set=user_keys).to_numpy(zero_copy_only=False)
    movie_names = pc.list_element(to_parts, 1)
    movie_keys = pc.unique(movie_names).sort() if edges.num_rows else pa.array([], pa.string())
    movie_of = pc.index_in(movie_names, value_set=movie_keys).to_numpy(zero_copy_only=False).astype(np.int64)
    known = ~np.isnan(user_of.astype(np.float64)) if edges.num_rows else np.zeros(0, bool)
    user_of = np.nan_to_num(user_of.astype(np.float64), nan=-1).astype(np.int64)
    stars = edges.column(rating).to_numpy(zero_copy_only=False).astype(np.float64)
    stars = np.where(np.isnan(stars), MISSING_RATING, stars).astype(np.float32)
    times = edges.column(timestamp).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    edge_keys = np.asarray(edges.column("_key").to_pylist(), dtype=object)
    # time order per user, ties by edge key; then the last rating of each (user, movie) wins
    order = np.lexsort((edge_keys.astype(str), times, user_of)) if edges.num_rows else np.zeros(0, np.int64)
    order = order[known[order]]
    pair = user_of[order] * max(len(movie_keys), 1) + movie_of[order]
    _, last_from_end = np.unique(pair[::-1], return_index=True)
    keep = np.sort(len(pair) - 1 - last_from_end)
    order = order[keep]
    counts = np.bincount(user_of[order], minlength=len(user_keys))
    return RatingHistories(user_keys, movie_keys, movie_collection,
                           np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), movie_of[order],
                           stars[order], times[order])
