"""`graphsvc triton serve` serves any TorchScript or ONNX model by its config.pbtxt: the real
tritonserver, models built here with torch.jit and torch.onnx."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import urllib.request
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from graphsvc.errors import TritonInferenceError
from graphsvc.models.repository import input_tensor, model_config, output_tensor, write_model_config
from graphsvc.triton.client import TritonClient
from graphsvc.triton.process import TritonServer
from graphsvc.triton.python_stubs import python_stub_processes
from tests.support import free_ports

IN, HIDDEN = 8, 16


class GraphEmbeddings(torch.nn.Module):
    """Shaped like the workshop's `graph_embeddings`: no batch dimension, positional
    `input__N`/`output__N` tensors — node features and an edge list in, node embeddings
    and one score per edge out."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(IN, HIDDEN)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor):
        h = torch.tanh(self.lin(x))
        return h, (h.index_select(0, edge_index[0]) * h.index_select(0, edge_index[1])).sum(1)


class Scale(torch.nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def graph_embeddings_config(name: str, platform: str, instances: int = 1):
    return model_config(
        name,
        platform=platform,
        max_batch_size=0,
        inputs=[input_tensor("input__0", "FP32", [-1, IN]), input_tensor("input__1", "INT64", [2, -1])],
        outputs=[output_tensor("output__0", "FP32", [-1, HIDDEN]), output_tensor("output__1", "FP32", [-1])],
        instance_count=instances,
    )


def scale_config(name: str, max_batch_size: int = 8, **kwargs):
    return model_config(name, max_batch_size=max_batch_size, inputs=[input_tensor("x__0", "FP32", [4])],
                        outputs=[output_tensor("y__0", "FP32", [4])], **kwargs)


def save_scale(directory: Path, factor: float) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / ".model.pt.tmp"
    torch.jit.script(Scale(factor)).save(str(tmp))
    os.replace(tmp, directory / "model.pt")  # a watcher never sees half a file


def export_onnx(module: torch.nn.Module, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    example = (torch.randn(5, IN), torch.tensor([[0, 1, 2], [1, 2, 3]]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, example, str(path), input_names=["input__0", "input__1"], output_names=["output__0", "output__1"],
            dynamic_axes={"input__0": {0: "nodes"}, "input__1": {1: "edges"}, "output__0": {0: "nodes"},
                          "output__1": {0: "edges"}},
            dynamo=False,
        )


def graph_request(nodes: int, edges: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"input__0": rng.standard_normal((nodes, IN), dtype=np.float32),
            "input__1": rng.integers(0, nodes, (2, edges)).astype(np.int64)}


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    root = tmp_path_factory.mktemp("any_models")
    torch.manual_seed(0)
    graph = GraphEmbeddings().eval()
    (root / "graph_embeddings" / "1").mkdir(parents=True)
    torch.jit.script(graph).save(str(root / "graph_embeddings" / "1" / "model.pt"))
    write_model_config(root / "graph_embeddings", graph_embeddings_config("graph_embeddings", "pytorch_libtorch",
                                                                          instances=2))
    export_onnx(graph, root / "graph_embeddings_onnx" / "1" / "model.onnx")
    write_model_config(root / "graph_embeddings_onnx",
                       graph_embeddings_config("graph_embeddings_onnx", "onnxruntime_onnx"))

    for name, versions, policy in (("scale_latest", (1, 2, 3), "latest"), ("scale_specific", (1, 2, 3), "specific"),
                                   ("scale_all", (1, 2), "all")):
        for v in versions:
            save_scale(root / name / str(v), float(v))
        config = scale_config(name)
        if policy == "latest":
            config.version_policy.latest.num_versions = 2
        elif policy == "specific":
            config.version_policy.specific.versions.extend([1, 3])
        else:
            config.version_policy.all.SetInParent()
        write_model_config(root / name, config)

    save_scale(root / "batched" / "1", 10.0)
    write_model_config(root / "batched", scale_config("batched", max_batch_size=8, dynamic_batching=True,
                                                      max_queue_delay_microseconds=300_000))
    return root, graph


@pytest.fixture(scope="module")
def server(repository, tmp_path_factory):
    root, _ = repository
    http, grpc, metrics = free_ports(3)
    with TritonServer(root, http_port=http, grpc_port=grpc, metrics_port=metrics,
                      runtime_dir=tmp_path_factory.mktemp("rt")) as srv:
        yield srv


@pytest.fixture
def client(server):
    with TritonClient(server.grpc_url, retries=0) as c:
        yield c


def repository_index(server) -> list[dict]:
    request = urllib.request.Request(f"{server.http_url}/v2/repository/index", data=b"{}", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def ready_versions(server, name: str) -> list[int]:
    return sorted(int(e["version"]) for e in repository_index(server)
                  if e["name"] == name and e.get("state") == "READY")


@pytest.mark.parametrize("model", ["graph_embeddings", "graph_embeddings_onnx"])
def test_workshop_shaped_model_without_batch_dimension(client, repository, model):
    _, graph = repository
    config = client.model_config(model)
    assert config.max_batch_size == 0 and [i.name for i in config.input] == ["input__0", "input__1"]
    for nodes, edges in ((3, 2), (11, 30), (40, 7)):
        request = graph_request(nodes, edges, seed=nodes)
        out = client.infer(model, request)
        with torch.inference_mode():
            embeddings, scores = graph(*(torch.from_numpy(v) for v in request.values()))
        assert out["output__0"].shape == (nodes, HIDDEN) and out["output__1"].shape == (edges,)
        np.testing.assert_allclose(out["output__0"], embeddings.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out["output__1"], scores.numpy(), rtol=1e-5, atol=1e-5)


def test_instance_group_count_runs_that_many_copies(server):
    stubs = list(python_stub_processes(server.work_dir).values())
    assert sum(path.endswith("/models/graph_embeddings") for path in stubs) == 2
    assert sum(path.endswith("/models/batched") for path in stubs) == 1


def test_version_policies(server, client):
    assert ready_versions(server, "scale_latest") == [2, 3]
    assert ready_versions(server, "scale_specific") == [1, 3]
    assert ready_versions(server, "scale_all") == [1, 2]
    x = np.ones((1, 4), np.float32)
    assert client.infer("scale_latest", {"x__0": x})["y__0"].tolist() == [[3.0] * 4]  # newest served version
    assert client.infer("scale_latest", {"x__0": x}, version="2")["y__0"].tolist() == [[2.0] * 4]
    assert client.infer("scale_specific", {"x__0": x}, version="1")["y__0"].tolist() == [[1.0] * 4]
    with pytest.raises(TritonInferenceError, match="scale_latest"):
        client.infer("scale_latest", {"x__0": x}, version="1")
    with pytest.raises(TritonInferenceError, match="scale_specific"):
        client.infer("scale_specific", {"x__0": x}, version="2")


def test_max_batch_size_is_enforced(client):
    out = client.infer("scale_all", {"x__0": np.ones((8, 4), np.float32)})
    assert out["y__0"].shape == (8, 4)
    with pytest.raises(TritonInferenceError, match="batch"):
        client.infer("scale_all", {"x__0": np.ones((9, 4), np.float32)})


def test_dynamic_batching_joins_concurrent_requests(server):
    before = TritonClient(server.grpc_url).inference_statistics("batched")
    rows = [np.full((1, 4), i, np.float32) for i in range(8)]

    def one(row):
        with TritonClient(server.grpc_url, retries=0) as c:
            return c.infer("batched", {"x__0": row})["y__0"]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, rows))
    for row, result in zip(rows, results):
        np.testing.assert_array_equal(result, row * 10)  # each caller gets its own rows back
    after = TritonClient(server.grpc_url).inference_statistics("batched")
    assert after["inference_count"] - before["inference_count"] == 8
    assert after["execution_count"] - before["execution_count"] < 8


# -- live updates ----------------------------------------------------------------------------


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def test_live_updates_without_restart(tmp_path):
    repo = tmp_path / "repo"
    save_scale(repo / "live" / "1", 1.0)
    write_model_config(repo / "live", scale_config("live"))
    http, grpc, metrics = free_ports(3)
    x = np.ones((2, 4), np.float32)
    with TritonServer(repo, http_port=http, grpc_port=grpc, metrics_port=metrics, poll_secs=0.5) as server, \
            TritonClient(server.grpc_url, retries=0) as client:
        pid = server.pid
        assert ready_versions(server, "live") == [1]

        save_scale(repo / "live" / "2", 2.0)  # a new version directory
        assert wait_for(lambda: ready_versions(server, "live") == [2]), repository_index(server)
        assert client.infer("live", {"x__0": x})["y__0"].tolist() == (2 * x).tolist()
        assert client.latest_version("live") == "2"

        save_scale(repo / "live" / "2", 5.0)  # the model file of the served version changes
        assert wait_for(lambda: client.infer("live", {"x__0": x})["y__0"][0, 0] == 5.0)
        assert ("live", "load", True) in server.reloads and not server.load_errors

        (repo / "live" / "3").mkdir()  # a broken version: refused, the old one keeps answering
        (repo / "live" / "3" / "model.pt").write_bytes(b"not TorchScript")
        assert wait_for(lambda: "live" in server.load_errors), server.reloads
        assert client.infer("live", {"x__0": x})["y__0"].tolist() == (5 * x).tolist()
        shutil.rmtree(repo / "live" / "3")
        save_scale(repo / "live" / "4", 4.0)  # … and the next good one is served again
        assert wait_for(lambda: ready_versions(server, "live") == [4])
        assert client.infer("live", {"x__0": x})["y__0"].tolist() == (4 * x).tolist()
        assert server.pid == pid and server.is_running()  # never restarted


# -- Triton stopped and restarted in the middle of a run -------------------------------------


@pytest.mark.parametrize("rows", [2, 2048], ids=["small", "shared-memory"])
def test_requests_survive_a_server_restart(tmp_path, caplog, rows):
    """2,048 rows × 64 floats (512 KB) go through shared memory: the restarted server has
    forgotten the regions, so the client must register them again."""
    width = 4 if rows == 2 else 64
    repo = tmp_path / "repo"
    save_scale(repo / "scale" / "1", 3.0)
    write_model_config(repo / "scale", model_config(
        "scale", max_batch_size=max(8, rows), inputs=[input_tensor("x__0", "FP32", [width])],
        outputs=[output_tensor("y__0", "FP32", [width])]))
    http, grpc, metrics = free_ports(3)

    def make_server():
        return TritonServer(repo, http_port=http, grpc_port=grpc, metrics_port=metrics)

    sent = threading.Event()
    count = 40

    def requests():
        for i in range(count):
            if i == 10:
                sent.set()
            time.sleep(0.05)
            yield {"x__0": np.full((rows, width), i, np.float32)}

    server = make_server().__enter__()
    results: list = []
    failure: list = []
    client = TritonClient(server.grpc_url, retries=12, backoff=0.2, max_backoff=2.0)

    def run():
        try:
            results.extend(client.infer_many("scale", requests(), max_in_flight=2))
        except Exception as exc:  # noqa: BLE001 — asserted below
            failure.append(exc)

    worker = threading.Thread(target=run)
    try:
        with caplog.at_level("WARNING", logger="graphsvc.triton.retry"):
            worker.start()
            assert sent.wait(30)
            server.stop()  # down in the middle of the run …
            time.sleep(1.0)
            server = make_server().__enter__()  # … and back on the same ports
            worker.join(timeout=120)
    finally:
        server.stop()
        client.close()
    assert not failure, failure
    assert len(results) == count
    for i, result in enumerate(results):
        assert result["y__0"].shape == (rows, width) and (result["y__0"] == 3.0 * i).all()
    assert "retry" in caplog.text  # some requests did meet the stopped server
    assert client.shm_requests == (count if rows > 2 else 0)
