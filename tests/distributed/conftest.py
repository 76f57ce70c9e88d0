"""The Ray tests' shared set-up: one real Triton server serving the seeded GraphSAGE
layer by layer and the sentence encoder, and a local Ray per test module."""

from __future__ import annotations

import pytest

from graphsvc.triton.client import TritonClient
from graphsvc.triton.process import TritonServer
from tests.jobs.reindex_support import export_model
from tests.support import REPO_ROOT, free_ports


@pytest.fixture(scope="session")
def ray_triton(tmp_path_factory):
    """GraphSAGE (100 → 64 → 64 → 8) as graphsage_layer0..2 and the sentence encoder, on the real Triton."""
    from jobs.export_models import export_sentence_encoder

    root = tmp_path_factory.mktemp("ray-triton")
    export_model(root / "repository", root / "graphsage.pth.tar")
    export_sentence_encoder(root / "repository")
    http, grpc, metrics = free_ports(3)
    with TritonServer(root / "repository", http_port=http, grpc_port=grpc, metrics_port=metrics,
                      runtime_dir=root / "runtime") as server, TritonClient(server.grpc_url) as client:
        client.wait_ready(timeout=180, models=["graphsage_layer0", "graphsage_layer1", "graphsage_layer2",
                                               "sentence_encoder"])
        yield client


@pytest.fixture(scope="module")
def local_ray():
    """A Ray on this machine for the module: 2 CPUs, a small object store, no dashboard;
    its workers import this checkout's graphsvc."""
    ray = pytest.importorskip("ray")
    from graphsvc.distributed.cluster import init_ray

    init_ray(num_cpus=2, object_store_memory=int(2e8), runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}})
    try:
        yield ray
    finally:
        ray.shutdown()
