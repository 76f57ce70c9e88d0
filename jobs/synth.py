"""Sample data the project makes itself, written as arangodump directories.

- `products`: a seeded graph shaped like ogbn-products (100-d `features`, a `category`
  out of 47, co-purchase edges) with planted structure: each category has a feature
  centroid, features are noisy around it, and most co-purchases stay inside a category.
  The noise is strong enough that features alone classify poorly and the graph helps.
- `products` at scale (`write_catalogue_dump`): the ogbn-products-shaped catalogue of
  `jobs.catalogue`, any size up to ogbn-products' own (2,449,029 products, 61,859,140
  co-purchases), generated chunk by chunk and written as arangodump writes large
  collections: gzip data split over several numbered files. Lines are built in bulk
  (`jobs.synth_text`) and gzipped in threads, so the full size takes minutes, not hours.
- `movies`: the small catalogue in `jobs/data/movies.jsonl` (written for this project)
  with genre and director vertices and `has_genre` / `directed_by` edges, and seeded
  `users` who rate movies (`rated` edges with a `rating` 1–5 and a `timestamp`): each
  user likes 1 or 2 genres (their `likes`), picks most movies from them and rates those
  higher, so a recommender has tastes to learn; the last few users rated nothing (they
  get the popular answer).
"""

from __future__ import annotations

import json
import re
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa

from graphsvc.store.base import EdgeDefinition, GraphInfo
from graphsvc.store.dumps import dump_being_built, write_dump, write_graphs, write_structure
from jobs import synth_text as text
from jobs.catalogue import SPLIT_NAMES, Catalogue, CatalogueSpec, EdgeChunk, ProductChunk

MOVIES_SOURCE = Path(__file__).resolve().parent / "data" / "movies.jsonl"


@dataclass(frozen=True)
class ProductGraphSpec:
    num_products: int = 4000
    num_categories: int = 47
    feature_dim: int = 100
    mean_degree: float = 10.0
    same_category_share: float = 0.8
    feature_noise: float = 2.2
    seed: int = 7


@dataclass(frozen=True)
class ProductGraph:
    features: np.ndarray  # [N, dim] float32
    categories: np.ndarray  # [N] int64
    edges: np.ndarray  # [E, 2] int64, each undirected pair once


def generate_product_graph(spec: ProductGraphSpec) -> ProductGraph:
    rng = np.random.default_rng(spec.seed)
    n, c = spec.num_products, spec.num_categories
    # skewed category sizes, like a real catalogue; every category keeps some products
    weights = 1.0 / np.arange(1, c + 1) ** 0.6
    categories = rng.choice(c, size=n, p=weights / weights.sum())
    categories[:c] = np.arange(c)
    categories = rng.permutation(categories).astype(np.int64)

    centroids = rng.normal(size=(c, spec.feature_dim))
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    centroids *= 3.0
    features = centroids[categories] + rng.normal(scale=spec.feature_noise, size=(n, spec.feature_dim))

    members = [np.flatnonzero(categories == k) for k in range(c)]
    # each product starts about mean_degree/2 co-purchases; with both directions that is mean_degree
    starts = rng.poisson(spec.mean_degree / 2, size=n) + 1
    sources = np.repeat(np.arange(n), starts)
    same = rng.random(sources.size) < spec.same_category_share
    targets = rng.integers(0, n, size=sources.size)
    for k in range(c):
        pick = same & (categories[sources] == k)
        targets[pick] = rng.choice(members[k], size=int(pick.sum()))
    pairs = np.stack([np.minimum(sources, targets), np.maximum(sources, targets)], axis=1)
    pairs = np.unique(pairs[pairs[:, 0] != pairs[:, 1]], axis=0)
    return ProductGraph(features.astype(np.float32), categories, pairs)


def product_key(i: int) -> str:
    return f"P{i:07d}"


def write_products_dump(out: Path, spec: ProductGraphSpec = ProductGraphSpec()) -> dict:
    graph = generate_product_graph(spec)

    def products() -> Iterator[dict]:
        for i in range(spec.num_products):
            yield {
                "_key": product_key(i),
                "title": f"Product {i}",
                "category": int(graph.categories[i]),
                # three decimals keep the dump small; the model sees float32 anyway
                "features": [round(float(v), 3) for v in graph.features[i]],
            }

    def copurchases() -> Iterator[dict]:
        for number, (a, b) in enumerate(graph.edges):
            yield {"_key": f"c{number}", "_from": f"products/{product_key(a)}", "_to": f"products/{product_key(b)}"}

    write_dump(
        out,
        database="products",
        collections=[("products", "document", products()), ("bought_together", "edge", copurchases())],
        graphs=[GraphInfo("products_graph", (EdgeDefinition("bought_together", ("products",), ("products",)),))],
    )
    return {"products": spec.num_products, "bought_together": int(len(graph.edges))}


PRODUCTS_GRAPH = GraphInfo("products_graph", (EdgeDefinition("bought_together", ("products",), ("products",)),))
KEY_DIGITS = 7  # product keys P0000000…, as `product_key` writes them
GZIP_LEVEL = 1  # ~3x faster than level 6 for a file ~20 % larger; the writer is gzip-bound


def write_catalogue_dump(
    out: Path,
    spec: CatalogueSpec,
    files: int = 8,
    threads: int = 2,
    on_progress: Callable[[str, int], None] | None = None,
) -> dict:
    """Write the catalogue `spec` describes as an arangodump directory at `out`: products and
    bought_together each split over up to `files` gzip data files, and the named graph.

    Chunks are generated, rendered and compressed in `threads` threads (numpy, Arrow and
    zlib release the GIL) and written in order; each chunk is its own gzip member, so the
    bytes do not depend on the thread count. Memory: the per-product state plus a few
    chunks in flight. Returns counts and timings.
    """
    return _write_products(out, Catalogue(spec), files, threads, on_progress)


def write_ogb_dump(out: Path, root: Path, split: str | None = None, files: int = 8, threads: int = 2,
                   on_progress: Callable[[str, int], None] | None = None) -> dict:
    """Write an OGB node dataset on disk (ogbn-products as the `ogb` package lays it out,
    see `graphsvc.graph.ogb`) as the same arangodump the synthetic catalogue is: product
    `P{i:07d}` for node i, `category` its label, `split` from the dataset's split
    directory, `features`; each undirected co-purchase once. So the workshop's own
    catalogue goes through `jobs restore-dumps` and every job like the synthetic one."""
    from graphsvc.graph.ogb import load_ogb_node_dataset

    return _write_products(out, _LoadedCatalogue(load_ogb_node_dataset(root, split)), files, threads, on_progress)


@dataclass(frozen=True)
class _LoadedSpec:
    num_products: int
    num_edges: int
    num_chunks: int


class _LoadedCatalogue:
    """A catalogue already in memory (an OGB dataset), served in the chunks the dump
    writer asks for: products in ranges, co-purchases by their smaller end, as
    `jobs.catalogue.Catalogue` serves them."""

    exact_features = True  # the dataset's values, not rounded as the synthetic ones are

    def __init__(self, data, chunk_products: int | None = None):
        n = len(data.keys)
        # as the synthetic catalogue chunks: about 1/64 of the products, 256 to 16,384
        chunk_products = chunk_products or int(np.clip(n // 64, 256, 16_384))
        indptr, indices = data.graph.indptr, data.graph.indices
        owners = np.repeat(np.arange(n, dtype=indices.dtype), np.diff(indptr))
        upper = indices > owners  # each undirected pair once, from its smaller end, in order
        self._sources, self._targets = owners[upper], indices[upper]
        del owners, upper
        self._features = data.features
        self._labels = data.labels if data.labels is not None else np.full(n, -1, np.int64)
        self._splits = np.full(n, len(SPLIT_NAMES), np.int8)  # no split: written as null (absent)
        for number, name in enumerate(SPLIT_NAMES):
            if data.splits and name in data.splits:
                self._splits[data.splits[name]] = number
        self._chunk = chunk_products
        self.spec = _LoadedSpec(n, int(len(self._sources)), -(-n // chunk_products))
        starts = np.arange(self.spec.num_chunks, dtype=np.int64) * chunk_products
        self.edge_offsets = np.searchsorted(self._sources, starts)

    def products(self, chunk: int) -> ProductChunk:
        lo, hi = chunk * self._chunk, min((chunk + 1) * self._chunk, self.spec.num_products)
        return ProductChunk(lo, self._labels[lo:hi], self._labels[lo:hi], self._splits[lo:hi], self._features[lo:hi])

    def edges(self, chunk: int) -> EdgeChunk:
        lo = int(self.edge_offsets[chunk])
        hi = int(self.edge_offsets[chunk + 1]) if chunk + 1 < self.spec.num_chunks else self.spec.num_edges
        return EdgeChunk(lo, self._sources[lo:hi].astype(np.int64), self._targets[lo:hi].astype(np.int64))


def _write_products(out: Path, catalogue, files: int, threads: int,
                    on_progress: Callable[[str, int], None] | None) -> dict:
    started = time.perf_counter()
    spec = catalogue.spec
    digits = max(KEY_DIGITS, len(str(spec.num_products - 1)))
    edge_digits = len(str(max(spec.num_edges - 1, 1)))
    counts, file_counts = {}, {}
    with dump_being_built(out, "products") as tmp:
        for name, kind, render in (
            ("products", "document", lambda chunk: _product_lines(catalogue, chunk, digits)),
            ("bought_together", "edge", lambda chunk: _edge_lines(catalogue, chunk, digits, edge_digits)),
        ):
            # products split by chunk count, co-purchases by edge count (early chunks hold more)
            sizes = np.diff(np.append(catalogue.edge_offsets, spec.num_edges)) if kind == "edge" \
                else np.ones(spec.num_chunks)
            stem = write_structure(tmp, name, kind)
            parts = _parts(sizes, files)
            counts[name] = _write_split(tmp, stem, name, parts, threads, render, on_progress)
            file_counts[name] = int(parts[-1]) + 1
        write_graphs(tmp, [PRODUCTS_GRAPH])
    seconds = time.perf_counter() - started
    size = sum(f.stat().st_size for f in Path(out).iterdir())
    return {
        **counts,
        "files": file_counts,
        "bytes": size,
        "seconds": round(seconds, 2),
        "edges_per_second": round(counts["bought_together"] / seconds),
    }


def _parts(sizes: np.ndarray, files: int) -> np.ndarray:
    """The data file of each chunk: consecutive chunks, about equal sizes, numbered from 0."""
    before = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    wanted = np.minimum((before * files) // max(sizes.sum(), 1), files - 1).astype(np.int64)
    return np.unique(wanted, return_inverse=True)[1]


def _write_split(tmp: Path, stem: str, name: str, parts: np.ndarray, threads: int,
                 render: Callable[[int], tuple[pa.Buffer, int]], on_progress) -> int:
    """Chunks rendered and gzipped in a thread pool, written in order, chunk i into
    `<stem>.<parts[i]>.data.json.gz` (the reader orders split files by that number)."""
    chunks = len(parts)

    def compressed(chunk: int) -> tuple[bytes, int]:
        lines, rows = render(chunk)
        return zlib.compress(lines, GZIP_LEVEL, wbits=31), rows  # wbits=31: one gzip member

    rows_written = 0
    handle = None
    with ThreadPoolExecutor(max_workers=threads) as pool:
        # a window of chunks in flight keeps both cores busy and the memory bounded
        window = [pool.submit(compressed, chunk) for chunk in range(min(threads + 1, chunks))]
        try:
            for chunk in range(chunks):
                data, rows = window.pop(0).result()
                if chunk + len(window) + 1 < chunks:
                    window.append(pool.submit(compressed, chunk + len(window) + 1))
                if chunk == 0 or parts[chunk] != parts[chunk - 1]:
                    if handle is not None:
                        handle.close()
                    handle = (tmp / f"{stem}.{parts[chunk]}.data.json.gz").open("wb")
                handle.write(data)
                rows_written += rows
                if on_progress:
                    on_progress(name, rows_written)
        finally:
            for future in window:
                future.cancel()
            if handle is not None:
                handle.close()
    return rows_written


def _product_lines(catalogue: Catalogue, chunk: int, digits: int) -> tuple[bytes, int]:
    products = catalogue.products(chunk)
    numbers = np.arange(products.first, products.first + len(products.categories))
    lines = text.lines(
        '{"_key":"P', text.padded_integers(numbers, digits),
        '","title":"Product ', text.integers(numbers),
        '","category":', text.integers(products.categories),
        ',"split":', text.vocabulary([f'"{s}"' for s in SPLIT_NAMES] + ["null"], products.splits),
        ',"features":[', (text.exact_float_lists(products.features) if getattr(catalogue, "exact_features", False)
                          else text.float_lists(products.features)), "]}",
    )
    return lines, len(numbers)


def _edge_lines(catalogue: Catalogue, chunk: int, digits: int, edge_digits: int) -> tuple[bytes, int]:
    edges = catalogue.edges(chunk)
    numbers = np.arange(edges.first_number, edges.first_number + len(edges.sources))
    lines = text.lines(
        '{"_key":"c', text.padded_integers(numbers, edge_digits),
        '","_from":"products/P', text.padded_integers(edges.sources, digits),
        '","_to":"products/P', text.padded_integers(edges.targets, digits), '"}',
    )
    return lines, len(numbers)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


@dataclass(frozen=True)
class DemoUsersSpec:
    """The demo catalogue's users: who likes what, how much they rate."""

    users: int = 400
    unrated_users: int = 2  # the last ones: no ratings at all
    min_ratings: int = 15
    max_ratings: int = 40
    lean: float = 0.9  # share of a user's picks from the genres they like
    seed: int = 5


def demo_users(movies: list[dict], spec: DemoUsersSpec = DemoUsersSpec()) -> tuple[list[dict], list[dict]]:
    """(users, rated edges) over `movies` (documents with `_key` and `genres`): seeded,
    in time order per user."""
    rng = np.random.default_rng(spec.seed)
    genres = sorted({g for m in movies for g in m["genres"]})
    by_genre = {g: np.array([i for i, m in enumerate(movies) if g in m["genres"]]) for g in genres}
    share = np.array([len(by_genre[g]) for g in genres], np.float64)
    users, rated = [], []
    for u in range(1, spec.users + 1):
        likes = sorted(rng.choice(genres, size=int(rng.integers(1, 3)), replace=False, p=share / share.sum()).tolist())
        users.append({"_key": f"u{u:04d}", "name": f"User {u}", "likes": likes})
        if u > spec.users - spec.unrated_users:
            continue
        seen: set[int] = set()
        for _ in range(int(rng.integers(spec.min_ratings, spec.max_ratings + 1))):
            pool = by_genre[likes[rng.integers(len(likes))]] if rng.random() < spec.lean else None
            movie = int(rng.choice(pool)) if pool is not None else int(rng.integers(len(movies)))
            if movie in seen:
                continue
            seen.add(movie)
            fan = bool(set(likes) & set(movies[movie]["genres"]))
            stars = int(np.clip(round(rng.normal(4.3 if fan else 2.4, 0.8)), 1, 5))
            rated.append({"_key": f"u{u:04d}-{movies[movie]['_key']}", "_from": f"users/u{u:04d}",
                          "_to": f"movies/{movies[movie]['_key']}", "rating": stars,
                          "timestamp": 1_700_000_000 + 3_600 * len(seen) + u})
    return users, rated


def write_movies_dump(out: Path, source: Path = MOVIES_SOURCE, users: DemoUsersSpec | None = DemoUsersSpec()) -> dict:
    """The hand-written catalogue as an arangodump directory; with `users` (the default)
    also seeded users and their ratings (`users`, `rated`)."""
    movies = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    genres = sorted({g for m in movies for g in m["genres"]})
    directors = sorted({m["director"] for m in movies})
    genre_edges = [
        {"_key": f"{m['_key']}-{_slug(g)}", "_from": f"movies/{m['_key']}", "_to": f"genres/{_slug(g)}"}
        for m in movies
        for g in m["genres"]
    ]
    director_edges = [
        {"_key": m["_key"], "_from": f"movies/{m['_key']}", "_to": f"directors/{_slug(m['director'])}"}
        for m in movies
    ]
    collections = [
        ("movies", "document", movies),
        ("genres", "document", [{"_key": _slug(g), "name": g} for g in genres]),
        ("directors", "document", [{"_key": _slug(d), "name": d} for d in directors]),
        ("has_genre", "edge", genre_edges),
        ("directed_by", "edge", director_edges),
    ]
    edges = [EdgeDefinition("has_genre", ("movies",), ("genres",)),
             EdgeDefinition("directed_by", ("movies",), ("directors",))]
    counts = {
        "movies": len(movies),
        "genres": len(genres),
        "directors": len(directors),
        "has_genre": len(genre_edges),
        "directed_by": len(director_edges),
    }
    if users is not None:
        user_documents, rated = demo_users(movies, users)
        collections += [("users", "document", user_documents), ("rated", "edge", rated)]
        edges.append(EdgeDefinition("rated", ("users",), ("movies",)))
        counts.update(users=len(user_documents), rated=len(rated))
    write_dump(out, database="movies", collections=collections, graphs=[GraphInfo("movies_graph", tuple(edges))])
    return counts
