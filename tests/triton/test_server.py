"""Integration: the real tritonserver from nvidia-pytriton, TorchScript models via the Python-backend shim."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from graphsvc.errors import ConfigError, ModelRepositoryError, TritonInferenceError, TritonUnavailable
from graphsvc.models.repository import (
    ModelConfig,
    input_tensor,
    model_config,
    output_tensor,
    read_model_config,
    write_model_config,
)
from graphsvc.triton.cli import triton as triton_cli
from graphsvc.triton.client import RetryPolicy, TritonClient, parse_url
from graphsvc.triton.server import (
    TritonServer,
    build_runtime_repository,
    find_tritonserver,
    python_stub_processes,
    sync_runtime_repository,
)
from tests.support import free_ports

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class AddMul(torch.nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor):
        return x + y, x * y


class Points(torch.nn.Module):
    def forward(self, points: torch.Tensor, scale: torch.Tensor):
        scaled = points * scale.to(points.dtype)
        count = torch.full((1,), points.shape[0], dtype=torch.int64) * scale
        return scaled, count


def make_repository(root: Path) -> dict[str, torch.jit.ScriptModule]:
    modules = {"addmul": torch.jit.script(AddMul()), "points": torch.jit.script(Points())}
    (root / "addmul" / "1").mkdir(parents=True)
    modules["addmul"].save(str(root / "addmul" / "1" / "model.pt"))
    write_model_config(
        root / "addmul",
        model_config(
            "addmul",
            max_batch_size=8,
            dynamic_batching=True,
            max_queue_delay_microseconds=2000,
            inputs=[input_tensor("x__0", "TYPE_FP32", [4]), input_tensor("y__1", "TYPE_FP32", [4])],
            outputs=[output_tensor("sum__0", "TYPE_FP32", [4]), output_tensor("prod__1", "TYPE_FP32", [4])],
        ),
    )
    (root / "points" / "1").mkdir(parents=True)
    modules["points"].save(str(root / "points" / "1" / "model.pt"))
    write_model_config(
        root / "points",
        model_config(
            "points",
            max_batch_size=0,
            inputs=[input_tensor("points", "TYPE_FP32", [-1, 3]), input_tensor("scale", "TYPE_INT64", [1])],
            outputs=[output_tensor("scaled", "TYPE_FP32", [-1, 3]), output_tensor("count", "TYPE_INT64", [1])],
        ),
    )
    return modules


@pytest.fixture(scope="module")
def modules_and_repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("model_repository")
    return make_repository(root), root


@pytest.fixture(scope="module")
def server(modules_and_repo, tmp_path_factory):
    _, repo = modules_and_repo
    http, grpc, metrics = free_ports(3)
    work = tmp_path_factory.mktemp("triton_runtime")
    started = time.monotonic()
    with TritonServer(repo, http_port=http, grpc_port=grpc, metrics_port=metrics, runtime_dir=work) as srv:
        srv.startup_seconds = time.monotonic() - started
        yield srv
    assert not srv.is_running()


@pytest.fixture(scope="module")
def modules(modules_and_repo):
    return modules_and_repo[0]


@pytest.fixture(params=["grpc", "http"])
def client(request, server):
    url = server.grpc_url if request.param == "grpc" else server.http_url
    with TritonClient(url) as c:
        yield c


# -- unit-level ---------------------------------------------------------------------------


def test_find_tritonserver():
    binary = find_tritonserver()
    assert binary.name == "tritonserver" and os.access(binary, os.X_OK)


def test_parse_url():
    assert parse_url("localhost:8001") == ("grpc", "localhost:8001")
    assert parse_url("grpc://h:1") == ("grpc", "h:1")
    assert parse_url("http://h") == ("http", "h:8000")
    assert TritonClient("127.0.0.1:9").url == "grpc://127.0.0.1:9"


def test_runtime_repository_layout(modules_and_repo, tmp_path):
    _, repo = modules_and_repo
    runtime = tmp_path / "rt"
    assert build_runtime_repository(repo, runtime) == ["addmul", "points"]
    config = read_model_config(runtime / "addmul" / "config.pbtxt")
    original = read_model_config(repo / "addmul" / "config.pbtxt")
    assert config.backend == "python" and config.platform == ""
    assert config.input == original.input and config.output == original.output
    assert config.max_batch_size == 8 and config.dynamic_batching == original.dynamic_batching
    assert (runtime / "addmul" / "1" / "model.py").is_file()
    assert (runtime / "addmul" / "1" / "model.pt").resolve() == (repo / "addmul" / "1" / "model.pt").resolve()
    # unchanged source: a second build leaves the model directory alone
    before = (runtime / "addmul").stat().st_ino
    assert build_runtime_repository(repo, runtime) == ["addmul", "points"]
    assert (runtime / "addmul").stat().st_ino == before


def test_sync_reports_changes_and_keeps_a_model_whose_update_is_broken(modules_and_repo, tmp_path):
    _, good = modules_and_repo
    repo, runtime = tmp_path / "repo", tmp_path / "rt"
    shutil.copytree(good, repo)
    first = sync_runtime_repository(repo, runtime)
    assert first.changed == ["addmul", "points"] and first.removed == [] and first.errors == {}
    assert sync_runtime_repository(repo, runtime).changed == []  # nothing changed, nothing rebuilt

    (repo / "points" / "config.pbtxt").write_text("max_batch_size: 'eight'\n")  # a broken edit …
    shutil.copytree(repo / "addmul" / "1", repo / "addmul" / "2")  # … beside a good one
    sync = sync_runtime_repository(repo, runtime, strict=False)
    assert sync.changed == ["addmul"] and "points" in sync.errors and "config.pbtxt" in sync.errors["points"]
    assert sync.served == ["addmul", "points"]  # the old runtime copy of 'points' stays
    assert (runtime / "points" / "1" / "model.py").exists() and (runtime / "addmul" / "2" / "model.py").exists()
    with pytest.raises(ModelRepositoryError, match="points"):
        sync_runtime_repository(repo, runtime)  # at start-up a broken model is an error

    shutil.rmtree(repo / "points")
    sync = sync_runtime_repository(repo, runtime, strict=False)
    assert sync.removed == ["points"] and not (runtime / "points").exists()


def test_runtime_dir_must_be_ours(modules_and_repo, tmp_path):
    _, repo = modules_and_repo
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(ModelRepositoryError, match="refusing"):
        build_runtime_repository(repo, tmp_path)
    assert (tmp_path / "precious.txt").exists()


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is not None, reason="onnxruntime is installed")
def test_onnx_model_skipped_with_warning(tmp_path, caplog):
    write_model_config(tmp_path / "repo" / "enc", ModelConfig(name="enc", platform="onnxruntime_onnx"))
    (tmp_path / "repo" / "enc" / "1").mkdir()
    (tmp_path / "repo" / "enc" / "1" / "model.onnx").write_bytes(b"onnx")
    with caplog.at_level(logging.WARNING, logger="graphsvc.triton.server"):
        assert build_runtime_repository(tmp_path / "repo", tmp_path / "rt") == []
    assert "enc" in caplog.text and "onnxruntime" in caplog.text


def test_model_without_model_file_is_an_error(tmp_path):
    write_model_config(tmp_path / "repo" / "empty", ModelConfig(name="empty", platform="pytorch_libtorch"))
    with pytest.raises(ModelRepositoryError, match="empty.*model.pt"):
        build_runtime_repository(tmp_path / "repo", tmp_path / "rt")


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_closed_port_raises_unavailable_naming_url(scheme):
    (port,) = free_ports(1)
    url = f"{scheme}://127.0.0.1:{port}"
    client = TritonClient(url, retries=2, backoff=0.01)
    with pytest.raises(TritonUnavailable) as info:
        client.infer("addmul", {"x__0": np.zeros((1, 4), np.float32)})
    assert url in str(info.value) and "graphsvc triton serve" in str(info.value)
    assert info.value.attempts == 3 and "gave up after 3 attempts" in str(info.value)
    assert len(str(info.value).splitlines()) == 1
    assert client.is_ready() is False
    with pytest.raises(TritonUnavailable, match="not ready after"):
        client.wait_ready(timeout=0.3, interval=0.1)


def test_retry_policy_backs_off_exponentially_up_to_a_bound(monkeypatch):
    monkeypatch.setenv("GRAPHSVC_TRITON_RETRIES", "5")
    monkeypatch.setenv("GRAPHSVC_TRITON_BACKOFF", "0.5")
    monkeypatch.setenv("GRAPHSVC_TRITON_MAX_BACKOFF", "3")
    policy = RetryPolicy.from_env()
    assert policy == RetryPolicy(retries=5, backoff=0.5, max_backoff=3.0)
    bases = [0.5, 1.0, 2.0, 3.0, 3.0]
    for attempt, base in enumerate(bases, start=1):
        assert base * 0.9 <= policy.delay(attempt) <= base * 1.1
    assert policy.budget == sum(bases)
    assert TritonClient("grpc://127.0.0.1:1").retry_policy == policy  # clients take it from the environment
    assert TritonClient("grpc://127.0.0.1:1", retries=0).retries == 0  # … unless told otherwise
    monkeypatch.setenv("GRAPHSVC_TRITON_RETRIES", "many")
    with pytest.raises(ConfigError, match="GRAPHSVC_TRITON_RETRIES"):
        RetryPolicy.from_env()


def test_giving_up_on_a_down_server_takes_the_backoff_budget():
    (port,) = free_ports(1)
    client = TritonClient(f"grpc://127.0.0.1:{port}", retries=3, backoff=0.2, max_backoff=0.4)
    started = time.monotonic()
    with pytest.raises(TritonUnavailable) as info:
        list(client.infer_many("addmul", ({"x__0": np.zeros((1, 4), np.float32)} for _ in range(4)), max_in_flight=2))
    elapsed = time.monotonic() - started
    assert info.value.attempts == 4
    assert 0.9 * (0.2 + 0.4 + 0.4) <= elapsed < 10  # it waited between attempts, and gave up


def test_closing_the_client_stops_a_request_waiting_to_retry():
    (port,) = free_ports(1)
    client = TritonClient(f"grpc://127.0.0.1:{port}", retries=5, backoff=5.0)
    outcome = []

    def call():
        started = time.monotonic()
        try:
            client.infer("addmul", {"x__0": np.zeros((1, 4), np.float32)})
        except TritonUnavailable as exc:
            outcome.append((exc, time.monotonic() - started))

    thread = threading.Thread(target=call)
    thread.start()
    time.sleep(0.5)
    client.close()
    thread.join(timeout=10)
    (error, seconds), = outcome
    assert seconds < 3 and error.attempts == 1  # it did not sit out the 5 s backoff


# -- against the running server ---------------------------------------------------------------


def test_server_started_quickly(server):
    assert server.startup_seconds < 60
    assert server.models == ["addmul", "points"]


def test_models_ready(client):
    assert client.is_ready()
    assert client.model_ready("addmul") and client.model_ready("points")
    assert not client.model_ready("nope")
    assert {(s.name, s.state) for s in client.models()} == {("addmul", "READY"), ("points", "READY")}
    client.wait_ready(timeout=5)


def test_model_config(client):
    config = client.model_config("addmul")
    assert config.max_batch_size == 8
    assert [i.name for i in config.input] == ["x__0", "y__1"]
    assert client.model_config("points").max_batch_size == 0


def test_infer_batched(client, modules):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4), dtype=np.float32)
    y = rng.standard_normal((3, 4), dtype=np.float32)
    out = client.infer("addmul", {"x__0": x, "y__1": y})
    expected_sum, expected_prod = modules["addmul"](torch.from_numpy(x), torch.from_numpy(y))
    assert list(out) == ["sum__0", "prod__1"]
    np.testing.assert_array_equal(out["sum__0"], expected_sum.numpy())
    np.testing.assert_array_equal(out["prod__1"], expected_prod.numpy())
    only = client.infer("addmul", {"x__0": x, "y__1": y}, outputs=["prod__1"])
    assert list(only) == ["prod__1"]
    np.testing.assert_array_equal(only["prod__1"], expected_prod.numpy())


def test_infer_unbatched_variable_dims(client, modules):
    for rows in (1, 5, 17):
        points = np.arange(rows * 3, dtype=np.float32).reshape(rows, 3) / 7
        scale = np.array([3], dtype=np.int64)
        out = client.infer("points", {"points": points, "scale": scale})
        scaled, count = modules["points"](torch.from_numpy(points), torch.from_numpy(scale))
        assert out["scaled"].dtype == np.float32 and out["count"].dtype == np.int64
        np.testing.assert_array_equal(out["scaled"], scaled.numpy())
        np.testing.assert_array_equal(out["count"], count.numpy())
        assert out["count"].tolist() == [rows * 3]


def test_infer_many_keeps_order(client, modules):
    rng = np.random.default_rng(1)
    requests = []
    for i in range(20):
        n = 1 + i % 4
        requests.append({
            "x__0": np.full((n, 4), i, dtype=np.float32),
            "y__1": rng.standard_normal((n, 4), dtype=np.float32),
        })
    results = list(client.infer_many("addmul", iter(requests), max_in_flight=6))
    assert len(results) == 20
    for request, result in zip(requests, results):
        expected_sum, expected_prod = modules["addmul"](torch.from_numpy(request["x__0"]),
                                                        torch.from_numpy(request["y__1"]))
        np.testing.assert_array_equal(result["sum__0"], expected_sum.numpy())
        np.testing.assert_array_equal(result["prod__1"], expected_prod.numpy())


def test_inference_errors_name_the_model(client):
    with pytest.raises(TritonInferenceError, match="addmul"):
        client.infer("addmul", {"x__0": np.zeros((1, 5), np.float32), "y__1": np.zeros((1, 5), np.float32)})
    with pytest.raises(TritonInferenceError, match="no_such_model"):
        client.infer("no_such_model", {"x": np.zeros(1, np.float32)})


def test_cli_wait_and_status(server):
    runner = CliRunner()
    result = runner.invoke(triton_cli, ["wait", "--url", server.grpc_url, "--timeout", "10"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(triton_cli, ["status", "--url", server.http_url])
    assert result.exit_code == 0, result.output
    assert "addmul" in result.output and "READY" in result.output


def test_cli_errors_are_one_line():
    (port,) = free_ports(1)
    result = CliRunner().invoke(triton_cli, ["wait", "--url", f"grpc://127.0.0.1:{port}", "--timeout", "0.5"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: Triton is not reachable at grpc://127.0.0.1:")
    assert result.exception is None or isinstance(result.exception, SystemExit)


# -- separate servers -----------------------------------------------------------------------


def test_broken_model_fails_wait_ready_with_log_tail(modules_and_repo, tmp_path):
    _, good = modules_and_repo
    repo = tmp_path / "repo"
    (repo / "broken" / "1").mkdir(parents=True)
    (repo / "broken" / "1" / "model.pt").write_bytes(b"this is not a TorchScript archive")
    config = read_model_config(good / "addmul" / "config.pbtxt")
    config.name = "broken"
    write_model_config(repo / "broken", config)
    http, grpc, metrics = free_ports(3)
    server = TritonServer(repo, http_port=http, grpc_port=grpc, metrics_port=metrics)
    server.start()
    try:
        with pytest.raises(ModelRepositoryError) as info:
            server.wait_ready(timeout=60)
    finally:
        server.stop()
    message = str(info.value)
    assert message.startswith("model 'broken' failed to load")
    assert "tritonserver log" in message and "failed to load 'broken'" in message
    assert not server.is_running()


def _serve(repo: Path, runtime: Path, *options: str) -> tuple[subprocess.Popen, tuple[int, int, int]]:
    """`graphsvc triton serve` on free ports, as a process of its own (stderr piped)."""
    http, grpc, metrics = free_ports(3)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")]))
    cmd = [
        sys.executable, "-c", "from graphsvc.triton.cli import triton; triton()", "serve",
        "--model-repository", str(repo), "--http-port", str(http), "--grpc-port", str(grpc),
        "--metrics-port", str(metrics), "--runtime-dir", str(runtime), *options,
    ]
    return subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True), (http, grpc, metrics)


def test_serve_command_stops_cleanly_on_sigterm(modules_and_repo, tmp_path):
    _, repo = modules_and_repo
    runtime = tmp_path / "rt"
    proc, (http, grpc, metrics) = _serve(repo, runtime, "--host", "127.0.0.1")
    try:
        lines = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Triton ready"):
                break
        assert lines and lines[-1].startswith("Triton ready"), "".join(lines)
        assert f"grpc://127.0.0.1:{grpc}" in lines[-1] and f"http://127.0.0.1:{metrics}/metrics" in lines[-1]
        assert TritonClient(f"grpc://127.0.0.1:{grpc}").model_ready("points")
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10) as response:
            assert b"nv_inference_request_success" in response.read()  # the metrics endpoint on its own port
        stubs = python_stub_processes(runtime)
        assert len(stubs) == 2  # one Python-backend stub per model instance
        server_pids = {p for p in _children(proc.pid)}
        assert server_pids

        stopping = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert time.monotonic() - stopping < 20
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # nothing left behind: no tritonserver, no stub
    assert not [pid for pid in (*stubs, *server_pids) if _alive(pid)]
    assert python_stub_processes(runtime) == {}
    assert not TritonClient(f"http://127.0.0.1:{http}", retries=0).is_ready()


def test_serve_command_stopped_while_starting_leaves_nothing_behind(modules_and_repo, tmp_path):
    _, repo = modules_and_repo
    runtime = tmp_path / "rt"
    proc, _ = _serve(repo, runtime, "--verbose")
    try:
        started = False
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not started:  # tritonserver launched, models not ready yet
            line = proc.stderr.readline()
            if not line:
                break
            started = "starting" in line
        assert started, "serve never launched tritonserver"
        server_pids = _children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=60)
        assert proc.returncode == 0, rest
        assert "stopping Triton" in rest and "Triton ready" not in rest
        assert "did not stop" not in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not [pid for pid in server_pids if _alive(pid)]
    assert python_stub_processes(runtime) == {}


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_poll_mode_picks_up_new_models(modules_and_repo, tmp_path):
    _, good = modules_and_repo
    repo = tmp_path / "repo"
    shutil.copytree(good / "points", repo / "points")
    http, grpc, metrics = free_ports(3)
    with TritonServer(repo, http_port=http, grpc_port=grpc, metrics_port=metrics, poll_secs=1) as server:
        client = TritonClient(server.grpc_url)
        assert not client.model_ready("addmul")
        shutil.copytree(good / "addmul", repo / "addmul")
        deadline = time.monotonic() + 30
        while not client.model_ready("addmul") and time.monotonic() < deadline:
            time.sleep(0.2)
        x = np.ones((2, 4), np.float32)
        np.testing.assert_array_equal(client.infer("addmul", {"x__0": x, "y__1": x})["sum__0"], 2 * x)
        assert server.models == ["addmul", "points"]


def test_a_new_server_ends_the_stubs_a_killed_server_left_in_its_runtime_dir(modules_and_repo, tmp_path):
    _, repo = modules_and_repo
    runtime = tmp_path / "rt"
    http, grpc, metrics = free_ports(3)
    first = TritonServer(repo, http_port=http, grpc_port=grpc, metrics_port=metrics, runtime_dir=runtime)
    first.start()
    try:
        first.wait_ready(timeout=120)
        stubs = python_stub_processes(runtime)
        assert len(stubs) == 2
        os.kill(first.pid, signal.SIGKILL)  # as the OOM killer or `kill -9` would
        deadline = time.monotonic() + 10
        while _alive(first.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1)
        # the stubs outlive their server (they ignore SIGTERM)
        assert [pid for pid in stubs if _alive(pid)] == list(stubs)
        http, grpc, metrics = free_ports(3)
        with TritonServer(repo, http_port=http, grpc_port=grpc, metrics_port=metrics, runtime_dir=runtime):
            assert not [pid for pid in stubs if _alive(pid)]
            assert len(python_stub_processes(runtime)) == 2  # the new server's own
            assert TritonClient(f"grpc://127.0.0.1:{grpc}").model_ready("points")
    finally:
        for pid in python_stub_processes(runtime):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        first.stop()
