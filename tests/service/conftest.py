"""A small catalogue on real components: an embedded DuckDB store with products, their
clustered vectors in a published FAISS index, and the service app over both."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from graphsvc.index.artifacts import publish
from graphsvc.index.faiss_index import VectorIndex
from graphsvc.store.embedded import EmbeddedStore

CATEGORIES = ["Books", "Music", "Garden", "Toys"]
MODEL = {"name": "graphsage", "version": "1"}


@dataclass
class Catalogue:
    store: Path
    index_dir: Path
    keys: list[str]
    vectors: np.ndarray
    documents: dict


def clustered_vectors(n: int, dim: int, clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    labels = rng.integers(0, clusters, n)
    vectors = centres[labels] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    return vectors.astype(np.float32), labels


def make_catalogue(root: Path, n: int = 400, dim: int = 16, seed: int = 3) -> Catalogue:
    vectors, labels = clustered_vectors(n, dim, len(CATEGORIES), seed)
    keys = [f"P{i:05d}" for i in range(n)]
    documents = {
        key: {"_key": key, "title": f"Product {i}", "category": CATEGORIES[labels[i]], "price": float(i % 50)}
        for i, key in enumerate(keys)
    }
    store_path, index_dir = root / "store.duckdb", root / "indexes"
    with EmbeddedStore(store_path, create=True) as store:
        store.create_collection("products")
        store.upsert_documents("products", list(documents.values()))
    publish(index_dir, "products", VectorIndex.build(vectors, metric="cosine", kind="flat"), keys, MODEL)
    return Catalogue(store_path, index_dir, keys, vectors, documents)


@pytest.fixture
def catalogue(tmp_path) -> Catalogue:
    return make_catalogue(tmp_path)


def exact_top(catalogue: Catalogue, query: np.ndarray, k: int, allowed=None, exclude: str | None = None) -> list[str]:
    x = catalogue.vectors / np.linalg.norm(catalogue.vectors, axis=1, keepdims=True)
    q = query / np.linalg.norm(query)
    scores = x @ q
    order = np.argsort(-scores, kind="stable")
    out = []
    for i in order:
        key = catalogue.keys[i]
        if key == exclude or (allowed is not None and key not in allowed):
            continue
        out.append(key)
        if len(out) == k:
            break
    return out
