from __future__ import annotations

from pathlib import Path

import pytest

from graphsvc.store import open_store
from graphsvc.triton.client import TritonClient
from graphsvc.triton.process import TritonServer
from jobs.reindex import ReindexConfig, reindex
from tests.jobs.reindex_support import export_model, write_graph
from tests.support import free_ports


@pytest.fixture(scope="session")
def reindex_triton(tmp_path_factory):
    """The real Triton server serving a seeded GraphSAGE (100 → 64 → 64 → 8) layer by layer."""
    root = tmp_path_factory.mktemp("reindex-triton")
    export_model(root / "repository", root / "graphsage.pth.tar")
    http, grpc, metrics = free_ports(3)
    with TritonServer(root / "repository", http_port=http, grpc_port=grpc, metrics_port=metrics,
                      runtime_dir=root / "runtime") as server:
        with TritonClient(server.grpc_url) as client:
            client.wait_ready(timeout=180, models=["graphsage_layer0", "graphsage_layer1", "graphsage_layer2"])
            yield client


@pytest.fixture(scope="session")
def reindex_baseline(tmp_path_factory, reindex_triton):
    """A generated catalogue embedded once by `reindex` (its first, full run)."""
    root = tmp_path_factory.mktemp("reindex-baseline")
    write_graph(root / "store.duckdb")
    with open_store(str(root / "store.duckdb")) as store:
        summary = reindex(store, reindex_triton, root / "indexes", ReindexConfig(layer_batch_size=256))
    return root, summary


#: the graph-aware movie model shipped in checkpoints/ (jobs train-movies on the seed-1 catalogue)
MOVIE_CHECKPOINT = Path(__file__).resolve().parents[2] / "checkpoints" / "movie_graph.pth.tar"


@pytest.fixture(scope="session")
def movies_triton(tmp_path_factory):
    """The real Triton server serving the sentence encoder and the shipped graph-aware
    movie model layer by layer (`movie_graph_layer0`, `_layer1`)."""
    from jobs.export_models import export_movie_graph, export_sentence_encoder

    root = tmp_path_factory.mktemp("movies-triton")
    export_sentence_encoder(root / "repository")
    layers = [m.name for m in export_movie_graph(root / "repository", MOVIE_CHECKPOINT)]
    http, grpc, metrics = free_ports(3)
    with TritonServer(root / "repository", http_port=http, grpc_port=grpc, metrics_port=metrics,
                      runtime_dir=root / "runtime") as server, TritonClient(server.grpc_url) as client:
        client.wait_ready(timeout=180, models=["sentence_encoder", *layers])
        yield client


def restore_movie_catalogue(store_path: Path, movies: int, seed: int, **spec) -> dict:
    """A generated catalogue with people (jobs.synth_movies) restored into a new store."""
    from jobs.restore_dumps import restore_dumps
    from jobs.synth_movies import MovieCatalogueSpec, write_movie_catalogue_dump

    dump = store_path.parent / f"movies-{seed}-dump"
    counts = write_movie_catalogue_dump(dump, MovieCatalogueSpec(movies=movies, seed=seed, **spec))
    with open_store(str(store_path), create=True) as store:
        restore_dumps(store, [dump])
    return counts


@pytest.fixture(scope="session")
def user_tower_triton(tmp_path_factory):
    """A tower trained briefly on the seeded rating graph (`tests.recommend.ratings_graph`),
    exported as `user_tower` and served by the real Triton server: (root, store path,
    checkpoint, client). Tests copy the store before changing it."""
    from graphsvc.recommend.training import TrainSettings
    from jobs.export_models import export_user_tower
    from jobs.train_recommender import TrainRecommenderConfig, train_recommender
    from tests.recommend.ratings_graph import write_ratings_graph

    root = tmp_path_factory.mktemp("user-tower")
    write_ratings_graph(root / "store.duckdb")
    checkpoint = root / "user_tower.pt"
    with open_store(str(root / "store.duckdb")) as store:
        train_recommender(store, TrainRecommenderConfig(out=checkpoint, settings=TrainSettings(max_steps=300)))
    export_user_tower(root / "repository", checkpoint)
    http, grpc, metrics = free_ports(3)
    with TritonServer(root / "repository", http_port=http, grpc_port=grpc, metrics_port=metrics,
                      runtime_dir=root / "runtime") as server:
        with TritonClient(server.grpc_url) as client:
            client.wait_ready(timeout=180, models=["user_tower"])
            yield root, root / "store.duckdb", checkpoint, client
