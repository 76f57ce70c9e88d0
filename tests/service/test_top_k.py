"""Filtered top-k on real FAISS indexes: k hits whenever k documents match, on both the
exact-subset path and the ID-selector path of an IVF index."""

from __future__ import annotations

import numpy as np
import pytest

from graphsvc.index.artifacts import load_current, publish
from graphsvc.index.faiss_index import VectorIndex
from graphsvc.service.errors import BadRequest
from graphsvc.service.top_k import EXACT_SUBSET_MAX, candidates, top_k
from tests.service.conftest import MODEL, clustered_vectors


@pytest.fixture(scope="module")
def ivf(tmp_path_factory):
    vectors, labels = clustered_vectors(60_000, 16, 30, seed=5)
    keys = [f"K{i}" for i in range(len(vectors))]
    index = VectorIndex.build(vectors, kind="ivf", nlist=200, nprobe=2)
    root = tmp_path_factory.mktemp("ivf")
    publish(root, "items", index, keys, MODEL)
    return load_current(root, "items").warm(), vectors, labels, keys


def exact(vectors, query, allowed_ids, k):
    x = vectors[allowed_ids] / np.linalg.norm(vectors[allowed_ids], axis=1, keepdims=True)
    order = np.argsort(-(x @ (query / np.linalg.norm(query))), kind="stable")[:k]
    return [int(allowed_ids[i]) for i in order]


def test_small_candidate_sets_are_searched_exactly(ivf):
    loaded, vectors, labels, keys = ivf
    allowed_ids = np.flatnonzero(labels == 4)[:500]
    allowed = candidates(loaded, [keys[i] for i in allowed_ids] + ["not-indexed"])
    assert len(allowed) == 500
    (answer,) = top_k(loaded, vectors[7], 10, allowed=allowed)
    assert answer.keys == [keys[i] for i in exact(vectors, vectors[7], allowed_ids, 10)]


def test_large_candidate_sets_go_through_the_selector_and_still_return_k_matching_hits(ivf):
    loaded, vectors, labels, keys = ivf
    # a query far from the allowed documents: nprobe=2 alone finds none of them
    allowed_ids = np.flatnonzero(labels != labels[0])
    assert len(allowed_ids) > EXACT_SUBSET_MAX
    allowed = candidates(loaded, [keys[i] for i in allowed_ids])
    own_cluster = np.flatnonzero(labels == labels[0])
    answers = top_k(loaded, vectors[own_cluster[:5]], 25, allowed=allowed)
    allowed_keys = {keys[i] for i in allowed_ids}
    for answer in answers:
        assert len(answer.keys) == 25 and set(answer.keys) <= allowed_keys
        assert answer.scores == sorted(answer.scores, reverse=True)


def test_similar_leaves_the_document_itself_out_and_still_returns_k(ivf):
    loaded, vectors, labels, keys = ivf
    position = loaded.position("K123")
    (answer,) = top_k(loaded, loaded.index.reconstruct_batch([position]), 10, exclude=[position], stored=True)
    assert len(answer.keys) == 10 and "K123" not in answer.keys


def test_k_larger_than_the_candidates_returns_them_all(ivf):
    loaded, vectors, labels, keys = ivf
    allowed = candidates(loaded, ["K1", "K2", "K3"])
    (answer,) = top_k(loaded, vectors[1], 10, exclude=[1], allowed=allowed)
    assert sorted(answer.keys) == ["K2", "K3"]


def test_query_vectors_of_the_wrong_shape_or_not_finite_are_bad_requests(ivf):
    loaded = ivf[0]
    with pytest.raises(BadRequest, match="3 dimensions.*has 16"):
        top_k(loaded, np.ones(3), 5)
    with pytest.raises(BadRequest, match="NaN or infinite"):
        top_k(loaded, np.full(16, np.inf), 5)
