"""Large requests through system shared memory, on the real Triton server: the same
answers as tensors sent in the request, regions grown and freed, the fallbacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from graphsvc.errors import ConfigError
from graphsvc.models.repository import input_tensor, model_config, output_tensor, write_model_config
from graphsvc.triton.client import TritonClient
from graphsvc.triton.process import TritonServer
from graphsvc.triton.shm import PREFIX, SHM_MIN_BYTES, region_stem, remove_stale_regions, shared_memory_wanted
from tests.support import free_ports

WIDTH = 64


class Affine(torch.nn.Module):
    def forward(self, x: torch.Tensor, ids: torch.Tensor):
        return x * 2.0 + 1.0, ids.sum(dim=1, keepdim=True) * 10


class Cloud(torch.nn.Module):  # no batch dimension: the output's row count is the model's business
    def forward(self, points: torch.Tensor):
        return points[points[:, 0] > 0] * 3.0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("shm_repository")
    (repo / "affine" / "1").mkdir(parents=True)
    torch.jit.script(Affine()).save(str(repo / "affine" / "1" / "model.pt"))
    write_model_config(repo / "affine", model_config(
        "affine", max_batch_size=65536,
        inputs=[input_tensor("x__0", "FP32", [WIDTH]), input_tensor("ids__1", "INT64", [2])],
        outputs=[output_tensor("y__0", "FP32", [WIDTH]), output_tensor("total__1", "INT64", [1])]))
    (repo / "cloud" / "1").mkdir(parents=True)
    torch.jit.script(Cloud()).save(str(repo / "cloud" / "1" / "model.pt"))
    write_model_config(repo / "cloud", model_config(
        "cloud", max_batch_size=0, inputs=[input_tensor("points__0", "FP32", [-1, 3])],
        outputs=[output_tensor("kept__0", "FP32", [-1, 3])]))
    http, grpc, metrics = free_ports(3)
    with TritonServer(repo, http_port=http, grpc_port=grpc, metrics_port=metrics,
                      runtime_dir=tmp_path_factory.mktemp("shm_runtime")) as srv:
        yield srv


def _ours() -> set[str]:
    return {p.name for p in Path("/dev/shm").iterdir() if p.name.startswith(region_stem())}


def _batch(rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x__0": rng.normal(size=(rows, WIDTH)).astype(np.float32),
            "ids__1": rng.integers(0, 1000, size=(rows, 2)).astype(np.int64)}


def test_large_requests_go_through_shared_memory_with_the_same_answers(server):
    before = _ours()
    with TritonClient(server.grpc_url) as shared, TritonClient(server.grpc_url, shared_memory=False) as plain:
        assert shared.shared_memory and not plain.shared_memory
        for rows in (2048, 40_000, 3000):  # the second one outgrows the first regions
            batch = _batch(rows, seed=rows)
            assert sum(a.nbytes for a in batch.values()) >= SHM_MIN_BYTES
            got, want = shared.infer("affine", batch), plain.infer("affine", batch)
            assert got["y__0"].shape == (rows, WIDTH) and got["total__1"].shape == (rows, 1)
            assert np.array_equal(got["y__0"], want["y__0"]) and np.array_equal(got["total__1"], want["total__1"])
            assert np.allclose(got["y__0"], batch["x__0"] * 2 + 1)
            assert got["total__1"][:, 0].tolist() == (batch["ids__1"].sum(axis=1) * 10).tolist()
        only = shared.infer("affine", _batch(2048), outputs=["total__1"])
        assert list(only) == ["total__1"]
        small = shared.infer("affine", _batch(4))  # under the threshold: sent in the request
        assert small["y__0"].shape == (4, WIDTH)
        assert shared.shm_requests == 4 and plain.shm_requests == 0
        assert len(_ours() - before) == 2  # one input and one output region, grown in place
        many = list(shared.infer_many("affine", (_batch(4096, seed=s) for s in range(6)), max_in_flight=3))
        assert [m["y__0"].shape[0] for m in many] == [4096] * 6
        assert np.allclose(many[5]["y__0"], _batch(4096, seed=5)["x__0"] * 2 + 1)
    assert _ours() == before  # closing the clients freed every region


def test_a_model_without_batch_dimension_gets_its_outputs_in_the_response(server):
    rng = np.random.default_rng(1)
    points = rng.normal(size=(30_000, 3)).astype(np.float32)
    with TritonClient(server.grpc_url) as client:
        kept = client.infer("cloud", {"points__0": points})["kept__0"]
        assert client.shm_requests == 1
    assert np.allclose(kept, points[points[:, 0] > 0] * 3.0)


def test_shared_memory_setting():
    assert shared_memory_wanted("grpc", "127.0.0.1:8001", {}) is True
    assert shared_memory_wanted("grpc", "localhost:8001", {"GRAPHSVC_TRITON_SHM": "auto"}) is True
    assert shared_memory_wanted("grpc", "triton.internal:8001", {}) is False
    assert shared_memory_wanted("grpc", "triton.internal:8001", {"GRAPHSVC_TRITON_SHM": "on"}) is True
    assert shared_memory_wanted("grpc", "127.0.0.1:8001", {"GRAPHSVC_TRITON_SHM": "off"}) is False
    assert shared_memory_wanted("http", "127.0.0.1:8000", {"GRAPHSVC_TRITON_SHM": "on"}) is False
    with pytest.raises(ConfigError, match="GRAPHSVC_TRITON_SHM"):
        shared_memory_wanted("grpc", "127.0.0.1:8001", {"GRAPHSVC_TRITON_SHM": "yes"})


def test_regions_left_by_a_dead_process_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    namespace = region_stem().split("-")[2]
    stale = f"{PREFIX}-{namespace}-{int(dead.stdout)}-0-input"
    alive = f"{region_stem()}0-input"
    elsewhere = f"{PREFIX}-1{namespace}-{int(dead.stdout)}-0-input"  # another pid namespace: not ours to judge
    for name in (stale, alive, elsewhere, "someone-else"):
        (tmp_path / name).write_bytes(b"x")
    assert remove_stale_regions(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive, elsewhere, "someone-else"])


def test_too_little_room_in_dev_shm_falls_back_to_plain_requests(server, monkeypatch, caplog):
    import graphsvc.triton.shm as shm_module

    monkeypatch.setattr(shm_module, "_free_bytes", lambda directory: 3 << 20)  # a cramped container
    batch = _batch(20_000)  # needs an 8 MB input region
    before = _ours()
    with TritonClient(server.grpc_url) as client, caplog.at_level("WARNING", logger="graphsvc.triton.client"):
        got = client.infer("affine", batch)
        assert client.shm_requests == 0 and not client.shared_memory
        assert "shared memory with Triton" in caplog.text and "MB free" in caplog.text
    assert np.allclose(got["y__0"], batch["x__0"] * 2 + 1)
    assert _ours() == before
