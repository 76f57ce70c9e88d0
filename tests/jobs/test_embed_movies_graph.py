"""`jobs embed-movies` graph-aware through the real Triton server: the exported layers
equal the eager model, both vectors are written back, `similar` uses the graph-aware
vectors and a text search stays in the text space."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from graphsvc.errors import ConfigError
from graphsvc.graph.datasets import load_memberships, load_texts
from graphsvc.graph.relations import MovieRelations
from graphsvc.index.artifacts import load_current
from graphsvc.inference.relational import embed_movies_in_process
from graphsvc.models.graphsage import LAYER_NEIGHBOURS, LAYER_OUT, LAYER_SELF
from graphsvc.models.movie_graph import load_movie_checkpoint
from graphsvc.service.queries import SimilarityQueries
from graphsvc.store import open_store
from jobs.embed_movies import EmbedMoviesConfig, embed_movies
from tests.jobs.conftest import MOVIE_CHECKPOINT, restore_movie_catalogue
from tests.jobs.reindex_support import copy_store


def test_exported_layers_equal_the_eager_model(movies_triton):
    model, _ = load_movie_checkpoint(MOVIE_CHECKPOINT)
    rng = np.random.default_rng(3)
    for number, layer in enumerate(model.layers):
        rows = rng.normal(size=(37, 384)).astype(np.float32)
        neighbours = rng.normal(size=(37, 2 * 384)).astype(np.float32)
        served = movies_triton.infer(f"movie_graph_layer{number}", {LAYER_SELF: rows, LAYER_NEIGHBOURS: neighbours})
        with torch.inference_mode():
            eager = layer(torch.from_numpy(rows), torch.from_numpy(neighbours)).numpy()
        np.testing.assert_allclose(served[LAYER_OUT], eager, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(served[LAYER_OUT], axis=1), 1.0, atol=1e-5)


@pytest.fixture(scope="module")
def embedded(movies_triton, tmp_path_factory):
    root = tmp_path_factory.mktemp("embed-movies-graph")
    restore_movie_catalogue(root / "store.duckdb", 160, seed=21)
    with open_store(str(root / "store.duckdb")) as store:
        summary = embed_movies(store, movies_triton, root / "indexes", EmbedMoviesConfig(layer_batch_size=64))
        keys = store.select_keys("movies")
        documents = {d["_key"]: d for d in store.get_documents("movies", keys)}
    return root, summary, documents


def test_graph_aware_run_writes_both_vectors_and_similar_from_the_graph(embedded):
    root, summary, documents = embedded
    assert summary["embedding"] == "graph" and summary["embedded"] == 160
    assert summary["graph"]["relations"] == {"directed_by": 160, "acted_in": summary["graph"]["relations"]["acted_in"]}
    assert summary["graph"]["text_index"] == "movies.text"
    with open_store(str(root / "store.duckdb")) as store:
        keys, texts, _ = load_texts(store, "movies", "description", "title")
        names = ["directed_by", "acted_in"]
        relations = MovieRelations.build(names, load_memberships(store, "movies", keys, names), len(keys))
    order = keys.to_pylist()
    text = np.array([documents[k]["text_embedding"] for k in order], np.float32)
    graph = np.array([documents[k]["embedding"] for k in order], np.float32)
    model, _ = load_movie_checkpoint(MOVIE_CHECKPOINT)
    # layer-wise through Triton equals the model in this process on the same text vectors
    np.testing.assert_allclose(graph, embed_movies_in_process(model, relations, text), atol=1e-4)
    assert np.abs(graph - text).max() > 0.1  # not the text vectors again
    # similar: the exact top 10 by the graph-aware vectors (a flat index at this size)
    scores = graph @ graph.T
    np.fill_diagonal(scores, -np.inf)
    for row in (0, 57, 159):
        listed = [s["_key"] for s in documents[order[row]]["similar"]]
        assert listed == [order[i] for i in np.argsort(-scores[row], kind="stable")[:10]]
    manifest = load_current(root / "indexes", "movies").manifest
    assert manifest.extra["text_index"] == "movies.text" and manifest.model["name"] == "movie_graph"
    assert load_current(root / "indexes", "movies.text").manifest.extra["space"] == "text"


def test_text_search_stays_in_the_text_space_and_similar_uses_the_graph(embedded, movies_triton):
    root, _, documents = embedded
    queries = SimilarityQueries(lambda name: load_current(root / "indexes", name), lambda: None,
                                movies_triton.url)
    try:
        key = sorted(documents)[42]
        found = queries.search("movies", text=documents[key]["description"], k=3)
        assert found.hits[0].key == key and found.hits[0].score == pytest.approx(1.0, abs=1e-3)
        assert found.index_version == load_current(root / "indexes", "movies.text").version
        similar = queries.similar("movies", key, k=10)
        assert [h.key for h in similar.hits] == [s["_key"] for s in documents[key]["similar"]]
    finally:
        queries.close()


def test_text_mode_and_auto_without_people_edges_embed_the_text(movies_triton, tmp_path, embedded):
    root, _, documents = embedded
    with open_store(str(copy_store(root / "store.duckdb", tmp_path / "store.duckdb"))) as store:
        text_only = embed_movies(store, movies_triton, tmp_path / "indexes", EmbedMoviesConfig(embedding="text"))
        written = store.get_documents("movies", ["m21-00003"])[0]
        store.drop_collection("acted_in")
        store.drop_collection("directed_by")
        auto = embed_movies(store, movies_triton, tmp_path / "indexes", EmbedMoviesConfig())
        with pytest.raises(ConfigError, match="no edges in directed_by, acted_in"):
            embed_movies(store, movies_triton, tmp_path / "indexes", EmbedMoviesConfig(embedding="graph"))
    assert text_only["embedding"] == auto["embedding"] == "text"
    np.testing.assert_allclose(written["embedding"], documents["m21-00003"]["text_embedding"], atol=1e-5)
    assert "text_index" not in load_current(tmp_path / "indexes", "movies").manifest.extra


def test_a_service_configured_for_movies_also_serves_its_text_index(embedded):
    from graphsvc.service.reloader import IndexReloader

    root, _, _ = embedded
    reloader = IndexReloader(root / "indexes", ["movies"])
    reloader.check()
    assert reloader.collections() == ["movies", "movies.text"]
    assert reloader.get("movies.text").manifest.extra["space"] == "text" and reloader.ready
