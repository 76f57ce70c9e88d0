"""`jobs reindex movies`: only changed descriptions go through the sentence encoder on
the real Triton server; the result equals a full re-embedding."""

from __future__ import annotations

import json

import numpy as np
import pytest

from graphsvc.index.artifacts import load_current
from graphsvc.store import open_store
from jobs.reindex import ReindexConfig, reindex
from jobs.synth import MOVIES_SOURCE
from tests.jobs.reindex_support import attributes, copy_store


@pytest.fixture(scope="module")
def text_triton(movies_triton):
    """The session's Triton with the sentence encoder (and the graph-aware movie model)."""
    return movies_triton


def movie_attributes(store_path):
    return {k: {"embedding": v["embedding"], "similar": v["similar"]}
            for k, v in attributes(store_path, "movies").items()}


def test_only_changed_descriptions_are_re_embedded(text_triton, tmp_path):
    movies = [json.loads(line) for line in MOVIES_SOURCE.read_text().splitlines()]
    store_path, index_dir = tmp_path / "store.duckdb", tmp_path / "indexes"
    config = ReindexConfig(target="movies")
    with open_store(str(store_path), create=True) as store:
        store.create_collection("movies")
        store.upsert_documents("movies", movies)
        first = reindex(store, text_triton, index_dir, config)
        assert first["mode"] == "full" and first["written"] == len(movies)

        edited = [{**m, "description": m["description"] + " Restored in 4K."} for m in movies[:3]]
        store.upsert_documents("movies", edited + [{"_key": "m9999", "title": "A Late Addition",
                                                    "description": "A lighthouse keeper and a ghost play chess."}])
        store.upsert_documents("movies", [{**movies[5], "year": 1999}])  # not the text: nothing to embed
        store.remove_documents("movies", [movies[7]["_key"]])
    full_store = copy_store(store_path, tmp_path / "full.duckdb")

    with open_store(str(store_path)) as store:
        second = reindex(store, text_triton, index_dir, config)
    with open_store(str(full_store)) as store:
        reindex(store, text_triton, tmp_path / "full-indexes", ReindexConfig(target="movies", full=True))

    assert second["mode"] == "incremental"
    assert (second["texts_changed"], second["new"], second["removed"]) == (3, 1, 1)
    assert second["re_embedded"] == 4 and second["recomputed_per_layer"] == [4]
    assert second["rewritten_documents"] == 4  # 3 edited + the one whose year changed
    ours, theirs = movie_attributes(store_path), movie_attributes(full_store)
    assert ours.keys() == theirs.keys() and "m9999" in ours and movies[7]["_key"] not in ours
    keys = sorted(ours)
    a = np.array([ours[k]["embedding"] for k in keys])
    b = np.array([theirs[k]["embedding"] for k in keys])
    assert np.abs(a - b).max() < 1e-4
    identical = np.mean([[s["_key"] for s in ours[k]["similar"]] == [s["_key"] for s in theirs[k]["similar"]]
                         for k in keys])
    assert identical > 0.97
    published = load_current(index_dir, "movies")
    assert published.version == 2 and len(published.keys) == len(movies)
    assert ours[movies[5]["_key"]]["embedding"] is not None  # the replace dropped it; written again
