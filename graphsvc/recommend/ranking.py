"""Each user's top k movies they have not rated: blocked matrix products of user vectors
against every movie vector, the rated ones masked out — the same ranking the movie index
answers with (inner product), computed for many users at once as a few large products
rather than one search per user (a catalogue of 10^4–10^5 movies fits a block)."""

from __future__ import annotations

import numpy as np

#: scores held at once (users per block × movies)
BLOCK_CELLS = 16_000_000


def top_unrated(user_vectors: np.ndarray, movie_vectors: np.ndarray, indptr: np.ndarray, rated: np.ndarray,
                k: int) -> tuple[np.ndarray, np.ndarray]:
    """(movie positions [users, k'], scores [users, k']) best first, k' = min(k, movies);
    user u's rated movies (`rated[indptr[u]:indptr[u+1]]`) are never among them. A user
    who rated nearly everything gets -1 ids (score -inf) past the movies left."""
    users, movies = len(user_vectors), len(movie_vectors)
    width = min(k, movies)
    ids = np.full((users, width), -1, np.int64)
    scores = np.full((users, width), -np.inf, np.float32)
    if not users or not width:
        return ids, scores
    block = max(1, BLOCK_CELLS // max(movies, 1))
    degrees = np.diff(indptr)
    for start in range(0, users, block):
        stop = min(start + block, users)
        products = np.asarray(user_vectors[start:stop], np.float32) @ np.asarray(movie_vectors, np.float32).T
        owner = np.repeat(np.arange(stop - start), degrees[start:stop])
        products[owner, rated[indptr[start]:indptr[stop]]] = -np.inf
        top = np.argpartition(-products, width - 1, axis=1)[:, :width] if width < movies else \
            np.tile(np.arange(movies), (stop - start, 1))
        chosen = np.take_along_axis(products, top, axis=1)
        order = np.argsort(-chosen, axis=1, kind="stable")
        top, chosen = np.take_along_axis(top, order, axis=1), np.take_along_axis(chosen, order, axis=1)
        ids[start:stop] = np.where(np.isfinite(chosen), top, -1)
        scores[start:stop] = chosen
    return ids, scores


def most_popular(popularity: np.ndarray, k: int) -> np.ndarray:
    """The k most rated movies, most rated first (ties by position, so stable)."""
    order = np.lexsort((np.arange(len(popularity)), -np.asarray(popularity)))
    return order[:k]
