"""Movie → movie relations through nodes without features (people, users, genres).

A movie is linked to *via* nodes by an edge collection (its director by `directed_by`,
its actors by `acted_in`). A via node has no vector of its own: it stands for the mean
of its movies' vectors. So for a movie m and a relation r, the relation's mean is the
mean over m's r-vias v of (the mean of v's other movies): a two-hop mean
movie → person → movie that leaves m itself out (a person's vector must not echo the
movie asking). That is a fixed linear map per relation, a weighted movie × movie CSR
matrix whose rows sum to 1 (or 0: no via with another movie), built once per graph
here; a layer of `graphsvc.models.movie_graph` applies its weights to
[self, mean_r for every r].
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np


@dataclass(frozen=True)
class Memberships:
    """Which movie belongs to which via node of one relation: parallel arrays."""

    movies: np.ndarray  # movie positions
    vias: np.ndarray  # via node numbers (any integers: positions in a list of via keys)

    def without(self, drop: np.ndarray) -> "Memberships":
        keep = np.ones(len(self.movies), bool)
        keep[drop] = False
        return Memberships(self.movies[keep], self.vias[keep])


@dataclass(frozen=True)
class WeightedRows:
    """A weighted sparse matrix in CSR form [num_rows, num_columns]."""

    indptr: np.ndarray  # int64
    indices: np.ndarray  # int64
    weights: np.ndarray  # float32
    num_columns: int

    @property
    def num_rows(self) -> int:
        return len(self.indptr) - 1

    def rows(self, rows: np.ndarray) -> "WeightedRows":
        rows = np.asarray(rows, np.int64)
        starts, degrees = self.indptr[rows], np.diff(self.indptr)[rows]
        indptr = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(degrees, out=indptr[1:])
        owners = np.repeat(np.arange(len(rows)), degrees)
        slots = starts[owners] + np.arange(indptr[-1]) - indptr[:-1][owners]
        return WeightedRows(indptr, self.indices[slots], self.weights[slots], self.num_columns)

    def torch(self):
        """The matrix as a torch sparse CSR tensor (for products with autograd in training)."""
        import torch

        with torch.sparse.check_sparse_tensor_invariants(enable=False), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return torch.sparse_csr_tensor(torch.from_numpy(self.indptr), torch.from_numpy(self.indices),
                                           torch.from_numpy(self.weights), size=(self.num_rows, self.num_columns))

    def times(self, values: np.ndarray) -> np.ndarray:
        """self @ values, as float32."""
        import torch

        from graphsvc.graph.aggregation import sparse_times

        if self.num_rows == 0:
            return np.zeros((0, values.shape[1]), np.float32)
        with torch.inference_mode():
            return sparse_times(self.torch(), torch.from_numpy(np.ascontiguousarray(values, np.float32))).numpy()


def two_hop_mean(memberships: Memberships, num_movies: int) -> WeightedRows:
    """The relation's mean as a [movies, movies] matrix: row m averages, over m's vias v
    that have another movie, the mean of v's other movies (duplicate memberships count once)."""
    pairs = np.unique(np.stack([memberships.vias, memberships.movies], 1).astype(np.int64), axis=0)
    vias, movies = pairs[:, 0], pairs[:, 1]
    _, starts, sizes = np.unique(vias, return_index=True, return_counts=True)
    size = np.repeat(sizes, sizes)  # per membership, its via's number of movies
    start = np.repeat(starts, sizes)
    useful = size > 1
    # every ordered pair (m, m') of movies of one via, m != m', weighted 1/(its other movies)
    reps = np.where(useful, size, 0)
    owner = np.repeat(np.arange(len(movies)), reps)
    offset = np.arange(reps.sum()) - np.repeat(np.cumsum(reps) - reps, reps)
    partner = start[owner] + offset
    keep = partner != owner
    rows, columns = movies[owner[keep]], movies[partner[keep]]
    weights = (1.0 / (size[owner[keep]] - 1)).astype(np.float64)
    vias_per_movie = np.bincount(movies[useful], minlength=num_movies)
    weights = weights / vias_per_movie[rows]
    key = rows * num_movies + columns
    order = np.argsort(key, kind="stable")
    key, weights = key[order], weights[order]
    first = np.concatenate(([True], key[1:] != key[:-1])) if len(key) else np.zeros(0, bool)
    summed = np.add.reduceat(weights, np.flatnonzero(first)) if len(key) else np.zeros(0)
    distinct = key[first]
    rows, columns = np.divmod(distinct, num_movies)
    indptr = np.zeros(num_movies + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=num_movies), out=indptr[1:])
    return WeightedRows(indptr, columns.astype(np.int64), summed.astype(np.float32), num_movies)


def via_mean(memberships: Memberships, num_vias: int, num_movies: int) -> WeightedRows:
    """[vias, movies]: each via's mean over its movies (the person's vector in training)."""
    pairs = np.unique(np.stack([memberships.vias, memberships.movies], 1).astype(np.int64), axis=0)
    counts = np.bincount(pairs[:, 0], minlength=num_vias)
    indptr = np.zeros(num_vias + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    weights = (1.0 / np.maximum(counts, 1))[pairs[:, 0]].astype(np.float32)
    return WeightedRows(indptr, pairs[:, 1].copy(), weights, num_movies)


@dataclass(frozen=True)
class MovieRelations:
    """A movie graph's relations, in the order a model's layers expect them."""

    names: tuple[str, ...]
    means: tuple[WeightedRows, ...]  # per relation, [movies, movies]

    @classmethod
    def build(cls, names: Sequence[str], memberships: Mapping[str, Memberships], num_movies: int) -> "MovieRelations":
        """A relation the graph lacks (no such edge collection) has an all-zero mean."""
        empty = Memberships(np.zeros(0, np.int64), np.zeros(0, np.int64))
        return cls(tuple(names), tuple(two_hop_mean(memberships.get(name, empty), num_movies) for name in names))

    @property
    def num_movies(self) -> int:
        return self.means[0].num_rows if self.means else 0

    def neighbour_means(self, rows: np.ndarray | None, values: np.ndarray) -> np.ndarray:
        """[len(rows), R × d]: every relation's mean of `values` for `rows` (all rows when None)."""
        parts = [(mean if rows is None else mean.rows(rows)).times(values) for mean in self.means]
        return np.concatenate(parts, axis=1) if parts else np.zeros((0, 0), np.float32)

    def neighbours(self, rows: np.ndarray) -> np.ndarray:
        """Bool per movie: `rows` and every movie one of their relation means reads, or that
        reads one of them (the pattern is symmetric): what a change to `rows` reaches in one layer."""
        reached = np.zeros(self.num_movies, bool)
        reached[rows] = True
        for mean in self.means:
            reached[mean.rows(rows).indices] = True
        return reached

    def row_hashes(self, identity: np.ndarray | None = None) -> np.ndarray:
        """A uint64 per movie that changes when any of its relation rows (columns or
        weights) changes: which movies' inputs moved in an incremental run. `identity`
        names each movie (default: its position), e.g. by its slot of the last run."""
        out = np.zeros(self.num_movies, np.uint64)
        for r, mean in enumerate(self.means):
            degrees = np.diff(mean.indptr)
            owners = np.repeat(np.arange(mean.num_rows), degrees)
            weights = np.round(mean.weights.astype(np.float64) * 1e6).astype(np.uint64)
            columns = (mean.indices if identity is None else identity[mean.indices]).astype(np.uint64)
            mixed = ((columns * np.uint64(0x9E3779B97F4A7C15))
                     ^ (weights * np.uint64(0xC2B2AE3D27D4EB4F)))
            part = np.zeros(self.num_movies, np.uint64)
            np.add.at(part, owners, mixed)
            out ^= (part + np.uint64(r + 1)) * np.uint64(0x165667B19E3779F9)
        return out
