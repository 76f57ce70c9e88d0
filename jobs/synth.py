"""Sample data the project makes itself, written as arangodump directories.

- `products`: a seeded graph shaped like ogbn-products (100-d `features`, a `category`
  out of 47, co-purchase edges) with planted structure: each category has a feature
  centroid, features are noisy around it, and most co-purchases stay inside a category.
  The noise is strong enough that features alone classify poorly and the graph helps.
- `movies`: the small catalogue in `jobs/data/movies.jsonl` (written for this project)
  with genre and director vertices and `has_genre` / `directed_by` edges.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from graphsvc.store.base import EdgeDefinition, GraphInfo
from graphsvc.store.dumps import write_dump

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


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def write_movies_dump(out: Path, source: Path = MOVIES_SOURCE) -> dict:
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
    write_dump(
        out,
        database="movies",
        collections=[
            ("movies", "document", movies),
            ("genres", "document", [{"_key": _slug(g), "name": g} for g in genres]),
            ("directors", "document", [{"_key": _slug(d), "name": d} for d in directors]),
            ("has_genre", "edge", genre_edges),
            ("directed_by", "edge", director_edges),
        ],
        graphs=[
            GraphInfo(
                "movies_graph",
                (
                    EdgeDefinition("has_genre", ("movies",), ("genres",)),
                    EdgeDefinition("directed_by", ("movies",), ("directors",)),
                ),
            )
        ],
    )
    return {
        "movies": len(movies),
        "genres": len(genres),
        "directors": len(directors),
        "has_genre": len(genre_edges),
        "directed_by": len(director_edges),
    }
