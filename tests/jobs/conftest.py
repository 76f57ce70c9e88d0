from __future__ import annotations

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
