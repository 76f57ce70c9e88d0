"""`jobs reindex movies`: only changed descriptions go through the sentence encoder on
the real Triton server; the result equals a full re-embedding."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
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


def test_graph_aware_reindex_re_embeds_what_a_change_reaches_and_equals_a_full_run(movies_triton, tmp_path):
    from graphsvc.graph.datasets import load_memberships
    from graphsvc.graph.relations import MovieRelations
    from graphsvc.service.queries import SimilarityQueries
    from tests.jobs.conftest import restore_movie_catalogue

    store_path, index_dir = tmp_path / "store.duckdb", tmp_path / "indexes"
    # sparse casts (1–2 actors, ~1.3 movies each): the layers' reach is a part of the catalogue
    restore_movie_catalogue(store_path, 240, seed=31, actors_share=0.75, min_cast=1, max_cast=2)
    names = ["directed_by", "acted_in"]

    def relations(store):
        keys = pa.array(sorted(store.select_keys("movies")))
        return keys, MovieRelations.build(names, load_memberships(store, "movies", keys, names), len(keys))

    config = ReindexConfig(target="movies", layer_batch_size=64)
    with open_store(str(store_path)) as store:
        first = reindex(store, movies_triton, index_dir, config)
        keys, before = relations(store)
        embedded = {d["_key"]: d["embedding"] for d in store.get_documents("movies", keys.to_pylist())}
        edited = store.get_documents("movies", ["m31-00010"])[0]
        store.upsert_documents("movies", [{**edited, "description": "A lighthouse keeper and a ghost play chess."}])
        # an actor of m31-00001 now also plays in m31-00200: both movies' people change
        actor = next(row["_from"] for batch in store.pull_edges("acted_in") for row in batch.to_pylist()
                     if row["_to"] == "movies/m31-00001")
        store.upsert_documents("acted_in", [{"_key": "new-link", "_from": actor, "_to": "movies/m31-00200"}])
        _, after = relations(store)
    assert first["mode"] == "full" and first["text_index"]["name"] == "movies.text"
    assert first["recomputed_per_layer"] == [240, 240, 240]
    full_store = copy_store(store_path, tmp_path / "full.duckdb")

    with open_store(str(store_path)) as store:
        second = reindex(store, movies_triton, index_dir, config)
    with open_store(str(full_store)) as store:
        reindex(store, movies_triton, tmp_path / "full-indexes", ReindexConfig(target="movies", full=True))

    order = keys.to_pylist()
    rows_changed = before.row_hashes() != after.row_hashes()
    layer0 = after.neighbours(np.array([order.index("m31-00010")])) | rows_changed
    layer1 = after.neighbours(np.flatnonzero(layer0)) | rows_changed
    assert second["mode"] == "incremental" and second["texts_changed"] == 1
    assert second["relation_rows_changed"] == int(rows_changed.sum()) > 0
    assert second["recomputed_per_layer"] == [1, int(layer0.sum()), int(layer1.sum())]
    assert layer1.sum() < 240 / 2
    ours, theirs = attributes(store_path, "movies"), attributes(full_store, "movies")
    a = np.array([ours[k]["embedding"] for k in order])
    b = np.array([theirs[k]["embedding"] for k in order])
    assert np.abs(a - b).max() < 1e-4
    moved = np.abs(a - np.array([embedded[k] for k in order])).max(axis=1) > 1e-6
    assert not (moved & ~layer1).any() and moved[order.index("m31-00200")]  # only what the change reaches
    assert second["text_index"]["version"] == 2
    queries = SimilarityQueries(lambda name: load_current(index_dir, name), lambda: None, movies_triton.url)
    try:
        found = queries.search("movies", text="A lighthouse keeper and a ghost play chess.", k=1)
        assert found.hits[0].key == "m31-00010" and found.hits[0].score == pytest.approx(1.0, abs=1e-3)
    finally:
        queries.close()
