"""Layer-wise inference: the in-process runner equals the model's own forward pass; a
subset of rows, a partitioned run and rows kept as tensors give the same numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from graphsvc.graph import CSRGraph
from graphsvc.inference.layerwise import apply_layer, embed_layerwise, partition, run_layers
from graphsvc.inference.runners import DeviceArrays, TorchLayers
from graphsvc.models.graphsage import GraphSAGE
from graphsvc.runs import RunJournal

NODES = 300


@pytest.fixture(scope="module")
def graph() -> CSRGraph:
    rng = np.random.default_rng(0)
    return CSRGraph.from_edges(rng.integers(0, NODES, 2400), rng.integers(0, NODES, 2400), NODES)


@pytest.fixture(scope="module")
def features() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((NODES, 12), dtype=np.float32)


@pytest.fixture(scope="module")
def model() -> GraphSAGE:
    torch.manual_seed(0)
    return GraphSAGE(12, 16, 4).eval()


def test_in_process_layers_equal_the_models_forward_on_the_whole_graph(model, graph, features):
    embedding, logits = embed_layerwise(model, graph, features, batch_size=64, device="cpu")
    targets = np.repeat(np.arange(NODES), graph.degree())
    edge_index = torch.from_numpy(np.stack([graph.indices, targets]).astype(np.int64))
    with torch.no_grad():
        expected_embedding, expected_logits = model(torch.from_numpy(features), edge_index,
                                                    torch.tensor([NODES] * 3))
    np.testing.assert_allclose(logits, expected_logits.numpy(), atol=1e-5)
    np.testing.assert_allclose(embedding, expected_embedding.numpy(), atol=1e-5)
    assert embedding.shape == (NODES, 16) and logits.shape == (NODES, 4)


@pytest.mark.parametrize("count", [40, 290])  # per-row neighbour means; one product over the graph
def test_a_subset_of_rows_equals_the_whole_layer_on_those_rows(model, graph, features, count):
    runner = TorchLayers(model, "cpu")
    rows = np.sort(np.random.default_rng(count).choice(NODES, count, replace=False))
    whole = apply_layer(runner, 0, graph, features, batch_size=64)
    some = apply_layer(runner, 0, graph, features, rows, batch_size=16)
    np.testing.assert_allclose(some, whole[rows], atol=1e-6)


def test_no_rows_give_an_empty_layer(model, graph, features):
    assert apply_layer(TorchLayers(model, "cpu"), 1, graph, features, np.zeros(0, np.int64)).shape[0] == 0


def test_a_partitioned_run_equals_the_unpartitioned_one(model, graph, features):
    runner = TorchLayers(model, "cpu")
    whole = run_layers(runner, graph, features, batch_size=32)
    parted = run_layers(runner, graph, features, batch_size=32, partitions=4)
    assert all(np.array_equal(a, b) for a, b in zip(whole, parted))


def test_partitions_cover_the_batches_in_order():
    assert partition(10, 3) == [range(0, 3), range(3, 6), range(6, 10)]
    assert partition(2, 4) == [range(0, 1), range(1, 2)]


def test_journal_names_do_not_depend_on_the_partitioning(model, graph, features, tmp_path):
    runner = TorchLayers(model, "cpu")
    first = RunJournal(tmp_path / "run")
    expected = run_layers(runner, graph, features, batch_size=64, partitions=3, journal=first)
    assert first.computed == 3 * 5  # layers × batches
    assert sorted(p.stem for p in (tmp_path / "run").glob("L2-*")) == [f"L2-B{b}" for b in range(5)]
    rerun = RunJournal(tmp_path / "run")
    again = run_layers(runner, graph, features, batch_size=64, journal=rerun)
    assert (rerun.computed, rerun.reused) == (0, 15)
    assert all(np.array_equal(a, b) for a, b in zip(expected, again))


def test_rows_kept_as_tensors_between_layers_give_the_same_numbers(model, graph, features, tmp_path):
    # the GPU runner's arrays, here on the CPU: the code path of rows that stay on a device
    runner = TorchLayers(model, "cpu")
    runner.arrays = DeviceArrays(torch.device("cpu"))
    expected = embed_layerwise(model, graph, features, batch_size=64, device="cpu")
    for journal in (None, RunJournal(tmp_path / "run")):
        got = run_layers(runner, graph, features, batch_size=64, journal=journal)
        for a, b in zip(expected, got):
            np.testing.assert_allclose(a, b, atol=1e-5)
    rows = np.arange(0, NODES, 7)
    some = apply_layer(runner, 0, graph, runner.arrays.put(features), rows, batch_size=16)
    np.testing.assert_allclose(some.numpy(), apply_layer(TorchLayers(model, "cpu"), 0, graph, features)[rows],
                               atol=1e-5)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@needs_cuda
def test_layerwise_inference_on_cuda_equals_the_cpus():
    rng = np.random.default_rng(0)
    graph = CSRGraph.from_edges(rng.integers(0, 500, 5000), rng.integers(0, 500, 5000), 500)
    features = rng.standard_normal((500, 12), dtype=np.float32)
    model = GraphSAGE(12, 16, 4)
    cpu = embed_layerwise(model, graph, features, device="cpu")
    gpu = embed_layerwise(model, graph, features, device="cuda")
    for a, b in zip(cpu, gpu):
        np.testing.assert_allclose(a, b, atol=1e-4)
    assert next(model.parameters()).device.type == "cpu"
