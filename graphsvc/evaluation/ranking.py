"""Recall@k measurements: held-out edges ranked by a node representation, and an
approximate index against exact search."""

from __future__ import annotations

from typing import Callable

import numpy as np

from graphsvc.graph import CSRGraph
from graphsvc.index.artifacts import LoadedIndex
from graphsvc.index.faiss_index import l2_normalise, recall_against_exact

# rows of query scores computed at once: bounded memory on big graphs
_SCORE_BLOCK_CELLS = 32_000_000


def held_out_queries(held_out: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """(query node, node it must find) pairs: each held-out edge both ways, a seeded
    sample of at most `limit`."""
    pairs = np.concatenate([held_out, held_out[:, ::-1]]) if len(held_out) else np.zeros((0, 2), np.int64)
    if len(pairs) > limit:
        pairs = pairs[np.sort(np.random.default_rng(seed).choice(len(pairs), size=limit, replace=False))]
    return pairs


def cosine_scorer(vectors: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    normalised = l2_normalise(np.ascontiguousarray(vectors, np.float32))
    return lambda rows: normalised[rows] @ normalised.T


def random_scorer(num_nodes: int, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    return lambda rows: rng.random((len(rows), num_nodes), dtype=np.float32)


def link_recall_at_k(score: Callable[[np.ndarray], np.ndarray], known: CSRGraph, queries: np.ndarray,
                     k: int = 10) -> dict:
    """For each (u, v): is v among the k best-scored nodes for u? The query node itself
    and its known neighbours (edges of `known`, the graph the model saw) are not
    candidates: recommending what is already known is no finding."""
    num_nodes = known.num_nodes
    block = max(1, _SCORE_BLOCK_CELLS // max(num_nodes, 1))
    hits = 0
    for start in range(0, len(queries), block):
        chunk = queries[start : start + block]
        sources, targets = chunk[:, 0], chunk[:, 1]
        scores = np.array(score(sources), dtype=np.float32, copy=True)
        rows = np.arange(len(chunk))
        scores[rows, sources] = -np.inf
        degrees = known.degree(sources)
        owner = np.repeat(rows, degrees)
        starts = np.repeat(known.indptr[sources] - np.cumsum(degrees) + degrees, degrees)
        scores[owner, known.indices[starts + np.arange(len(owner))]] = -np.inf
        target_scores = scores[rows, targets]
        # v is in the top k when fewer than k other candidates score at least as high
        # (ties count against v: a constant scorer finds nothing)
        rivals = (scores >= target_scores[:, None]).sum(axis=1) - 1
        hits += int((rivals < k).sum())
    expected_random = float(np.mean(k / np.maximum(num_nodes - 1 - known.degree(queries[:, 0]), 1))) \
        if len(queries) else None
    return {
        "recall_at_k": round(hits / len(queries), 6) if len(queries) else None,
        "hits": hits,
        "queries": int(len(queries)),
        "expected_random": round(expected_random, 6) if expected_random is not None else None,
    }


def index_recall_at_k(loaded: LoadedIndex, k: int = 10, sample: int = 1000, seed: int = 0) -> dict:
    """Recall@k of the published index at its stored settings against exact search over
    the same vectors, for a seeded sample of the stored vectors as queries (each
    query's own id is left out of both answers)."""
    index = loaded.index
    chosen, queries, exact = index.sample_with_exact_neighbours(k, sample, seed)
    recall = None
    if len(chosen):
        _, found = index.search(queries, exact.shape[1])
        recall = round(recall_against_exact(found, exact, chosen, k), 6)
    return {
        "recall_at_k": recall,
        "k": k,
        "sample": int(len(chosen)),
        "version": loaded.version,
        "count": index.count,
        "kind": index.kind,
        "metric": index.metric,
        **index.params,
        "manifest_calibration": loaded.manifest.extra.get("calibration"),
    }


def pca_2d(vectors: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """The first two principal components of the rows, and the share of variance each explains."""
    centred = np.asarray(vectors, np.float64) - np.asarray(vectors, np.float64).mean(axis=0)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    variance = singular**2
    share = (variance[:2] / variance.sum()).tolist() if variance.sum() > 0 else [0.0, 0.0]
    return (centred @ components[:2].T).astype(np.float32), [round(s, 4) for s in share]


def label_precision_at_k(vectors: np.ndarray, labels: np.ndarray, k: int = 10) -> dict:
    """For each item with a label (a row of the bool [N, L] `labels` with one True), the
    share of its k nearest other items by cosine similarity that share a label with it,
    averaged: genre precision@k of a `similar` list made from `vectors` by exact search.
    Items without a label are candidates, not queries."""
    normalised = l2_normalise(np.ascontiguousarray(vectors, np.float32))
    queries = np.flatnonzero(labels.any(axis=1))
    block = max(1, _SCORE_BLOCK_CELLS // max(len(normalised), 1))
    shared = 0
    for start in range(0, len(queries), block):
        rows = queries[start : start + block]
        scores = normalised[rows] @ normalised.T
        scores[np.arange(len(rows)), rows] = -np.inf
        top = np.argpartition(-scores, min(k, scores.shape[1] - 1) - 1, axis=1)[:, :k]
        shared += int((labels[top] & labels[rows][:, None, :]).any(axis=2).sum())
    return _precision(shared, len(queries), k)


def label_precision_of_lists(lists: list[np.ndarray], labels: np.ndarray, k: int = 10) -> dict:
    """label_precision_at_k for lists already made (the written-back `similar`: item
    positions per item, best first); a list shorter than k counts its missing places as misses."""
    queries = np.flatnonzero(labels.any(axis=1))
    shared = sum(int((labels[lists[q][:k]] & labels[q]).any(axis=1).sum()) for q in queries)
    return _precision(shared, len(queries), k)


def _precision(shared: int, queries: int, k: int) -> dict:
    return {"precision_at_k": round(shared / (queries * k), 6) if queries else None, "queries": int(queries),
            "k": k}
