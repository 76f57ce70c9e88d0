"""TritonServer: a real tritonserver started, watched and stopped; failures with the log tail; orphaned stubs."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time

import numpy as np
import pytest

from graphsvc.errors import ModelRepositoryError
from graphsvc.models.repository import read_model_config, write_model_config
from graphsvc.triton.client import TritonClient
from graphsvc.triton.process import TritonServer
from graphsvc.triton.python_stubs import python_stub_processes
from tests.support import free_ports
from tests.triton.support import alive


def test_server_started_quickly(server):
    assert server.startup_seconds < 60
    assert server.models == ["addmul", "points"]


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
        while alive(first.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1)
        # the stubs outlive their server (they ignore SIGTERM)
        assert [pid for pid in stubs if alive(pid)] == list(stubs)
        http, grpc, metrics = free_ports(3)
        with TritonServer(repo, http_port=http, grpc_port=grpc, metrics_port=metrics, runtime_dir=runtime):
            assert not [pid for pid in stubs if alive(pid)]
            assert len(python_stub_processes(runtime)) == 2  # the new server's own
            assert TritonClient(f"grpc://127.0.0.1:{grpc}").model_ready("points")
    finally:
        for pid in python_stub_processes(runtime):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        first.stop()

