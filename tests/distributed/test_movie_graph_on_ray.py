"""The graph-aware movie model on Ray (`jobs embed-movies --executor ray`): partitions of
the movies whose halos are the movies their relation means read, each partition's
relation means computed by its actor, the layers on the real Triton; the result equals
the local run (vectors within float tolerance, `similar` recall >= 0.99)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from graphsvc.distributed.partitions import partition_relations
from graphsvc.graph.relations import Memberships, MovieRelations
from graphsvc.inference.relational import run_movie_layers
from graphsvc.inference.runners import TritonLayers
from graphsvc.store import open_store
from jobs.embed_movies import EmbedMoviesConfig, embed_movies
from tests.jobs.conftest import movies_triton, restore_movie_catalogue  # noqa: F401 (the fixture)
from tests.jobs.reindex_support import copy_store

MODELS = ["movie_graph_layer0", "movie_graph_layer1"]


def random_relations(movies: int, seed: int) -> MovieRelations:
    """Two relations through 'people' of 1–4 movies each, over `movies` movies."""
    rng = np.random.default_rng(seed)
    memberships = {}
    for name, people in (("directed_by", movies // 3), ("acted_in", movies)):
        sizes = rng.integers(1, 5, people)
        memberships[name] = Memberships(rng.integers(0, movies, sizes.sum()), np.repeat(np.arange(people), sizes))
    return MovieRelations.build(["directed_by", "acted_in"], memberships, movies)


def test_each_partition_computes_its_movies_relation_means_from_its_own_and_halo_rows():
    relations = random_relations(300, seed=4)
    values = np.random.default_rng(5).normal(size=(300, 8)).astype(np.float32)
    plan = partition_relations(relations, 3, order="bfs")
    assert sorted(np.concatenate([p.owned for p in plan.parts]).tolist()) == list(range(300))
    for part in plan.parts:
        read = np.unique(np.concatenate([mean.rows(part.owned).indices for mean in relations.means]))
        # the halo: exactly the movies the rows' means read that another partition owns
        assert set(part.halo.tolist()) == set(read.tolist()) - set(part.owned.tolist())
        np.testing.assert_allclose(part.neighbour_means(values[part.nodes]),
                                   relations.neighbour_means(part.owned, values), rtol=1e-5, atol=1e-6)
        for q, rows in enumerate(part.sends):  # what it sends q is q's halo rows it owns
            other = plan.parts[q]
            wanted = other.halo[other.halo_owners[part.number]:other.halo_owners[part.number + 1]]
            assert part.owned[rows].tolist() == wanted.tolist()


def test_layers_on_ray_broadcast_equal_the_local_layers_and_a_rerun_loads_the_journaled_partitions(
        local_ray, movies_triton, tmp_path):  # noqa: F811
    from graphsvc.distributed.relational import embed_movie_layers_on_ray
    from graphsvc.runs import RunJournal

    relations = random_relations(400, seed=6)
    vectors = np.random.default_rng(7).normal(size=(400, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    local = run_movie_layers(TritonLayers(movies_triton, MODELS), relations, vectors, batch_size=128)[-1]
    journal = RunJournal(tmp_path / "journal")
    result = embed_movie_layers_on_ray(relations, vectors, movies_triton.url, MODELS, partitions=3, batch_size=128,
                                       journal=journal)
    np.testing.assert_allclose(result.last_layer, local, rtol=1e-4, atol=1e-5)
    # 400 × 384 floats fit the small object store many times over: every layer is put once
    assert [layer.route for layer in result.layers] == ["broadcast", "broadcast"]
    assert result.computed == 6 and result.partitioning.summary(400)["partitions"] == 3
    assert sorted(p.stem for p in (tmp_path / "journal").glob("L*-P*.npy")) == [
        f"L{layer}-P{p}" for layer in range(2) for p in range(3)]
    # a rerun (a driver killed after the layers) loads every partition instead of calling Triton
    again = embed_movie_layers_on_ray(relations, vectors, movies_triton.url, MODELS, partitions=3, batch_size=128,
                                      journal=journal)
    assert again.computed == 0 and again.reused == 6
    np.testing.assert_array_equal(again.last_layer, result.last_layer)


def graph_attributes(store_path) -> dict[str, dict]:
    with open_store(str(store_path)) as store:
        table = pa.Table.from_batches(list(store.pull("movies", {
            "embedding": pa.list_(pa.float32()), "text_embedding": pa.list_(pa.float32()),
            "similar": pa.list_(pa.struct([("_key", pa.string()), ("score", pa.float32())]))})))
    return {row["_key"]: row for row in table.to_pylist()}


def test_embed_movies_on_ray_is_graph_aware_and_equals_the_local_run_with_halos_shuffled(
        local_ray, movies_triton, tmp_path):  # noqa: F811
    restore_movie_catalogue(tmp_path / "local.duckdb", 36, seed=23)
    on_ray = copy_store(tmp_path / "local.duckdb", tmp_path / "ray.duckdb")
    with open_store(str(tmp_path / "local.duckdb")) as store:
        local_summary = embed_movies(store, movies_triton, tmp_path / "local-indexes",
                                     EmbedMoviesConfig(layer_batch_size=32))
    with open_store(str(on_ray)) as store:  # `auto`: graph-aware on Ray too
        summary = embed_movies(store, movies_triton, tmp_path / "indexes", EmbedMoviesConfig(
            executor="ray", partitions=3, layer_batch_size=16, ray_broadcast=False))
    assert local_summary["embedding"] == summary["embedding"] == "graph"
    assert summary["graph"]["relations"] == local_summary["graph"]["relations"]
    graph = summary["ray"]["graph"]
    assert graph["partitions"] == 3 and sum(graph["owned"]) == 36 and sum(graph["halo"]) > 0
    assert [layer["route"] for layer in graph["layers"]] == ["shuffle", "shuffle"]
    assert summary["batches"]["computed"] == 3 + 2 * 3  # the text blocks, then 2 layers × 3 partitions

    expected, actual = graph_attributes(tmp_path / "local.duckdb"), graph_attributes(on_ray)
    keys = sorted(expected)
    assert keys == sorted(actual) and len(keys) == 36
    for name in ("embedding", "text_embedding"):
        np.testing.assert_allclose(np.array([actual[k][name] for k in keys]),
                                   np.array([expected[k][name] for k in keys]), rtol=1e-4, atol=1e-5)
    assert np.abs(np.array([actual[k]["embedding"] for k in keys])
                  - np.array([actual[k]["text_embedding"] for k in keys])).max() > 0.1  # not the text again
    found = sum(len({s["_key"] for s in actual[k]["similar"]} & {s["_key"] for s in expected[k]["similar"]})
                for k in keys)
    assert found / sum(len(expected[k]["similar"]) for k in keys) >= 0.99
    assert not list((tmp_path / "indexes" / ".jobs" / "movies").glob("embed-movies-*"))


def test_graph_asked_on_ray_without_people_edges_says_to_embed_text(local_ray, movies_triton, tmp_path):  # noqa: F811
    from graphsvc.errors import ConfigError

    restore_movie_catalogue(tmp_path / "store.duckdb", 12, seed=24)
    with open_store(str(tmp_path / "store.duckdb")) as store:
        store.drop_collection("acted_in")
        store.drop_collection("directed_by")
        with pytest.raises(ConfigError, match="no edges in directed_by, acted_in"):
            embed_movies(store, movies_triton, tmp_path / "indexes",
                         EmbedMoviesConfig(executor="ray", embedding="graph"))
