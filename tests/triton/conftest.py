"""Fixtures for the tests against the real tritonserver: two TorchScript models and a server serving them."""

from __future__ import annotations

import time

import pytest

from graphsvc.triton.client import TritonClient
from graphsvc.triton.process import TritonServer
from tests.support import free_ports
from tests.triton.support import make_repository


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

