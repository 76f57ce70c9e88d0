"""Retries against a server that is not there: backoff bounds, giving up, errors naming the URL."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from graphsvc.errors import ConfigError, TritonUnavailable
from graphsvc.triton.client import TritonClient
from graphsvc.triton.retry import RetryPolicy
from tests.support import free_ports


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

