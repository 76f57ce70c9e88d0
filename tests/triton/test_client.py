"""The client against the real tritonserver (gRPC and HTTP): health, metadata, inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from graphsvc.errors import TritonInferenceError
from graphsvc.triton.client import TritonClient, parse_url


def test_parse_url():
    assert parse_url("localhost:8001") == ("grpc", "localhost:8001")
    assert parse_url("grpc://h:1") == ("grpc", "h:1")
    assert parse_url("http://h") == ("http", "h:8000")
    assert TritonClient("127.0.0.1:9").url == "grpc://127.0.0.1:9"


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

