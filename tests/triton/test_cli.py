"""`graphsvc triton serve|wait|status`: the serve command as a process of its own, stopped cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from click.testing import CliRunner

from graphsvc.triton.cli import triton as triton_cli
from graphsvc.triton.client import TritonClient
from graphsvc.triton.python_stubs import python_stub_processes
from tests.support import free_ports
from tests.triton.support import alive, children

PROJECT_ROOT = Path(__file__).resolve().parents[2]


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
        server_pids = {p for p in children(proc.pid)}
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
    assert not [pid for pid in (*stubs, *server_pids) if alive(pid)]
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
        server_pids = children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=60)
        assert proc.returncode == 0, rest
        assert "stopping Triton" in rest and "Triton ready" not in rest
        assert "did not stop" not in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not [pid for pid in server_pids if alive(pid)]
    assert python_stub_processes(runtime) == {}

