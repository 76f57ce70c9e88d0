"""`jobs train-graphsage`: store graphs, OGB directories, splits, held-out edges, early
stopping, repeatability, the workshop's checkpoint format."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from graphsvc.errors import ConfigError, StoreError
from graphsvc.models.checkpoints import metrics_path
from graphsvc.models.graphsage import load_checkpoint
from graphsvc.store import open_store
from jobs.cli import cli
from jobs.synth import ProductGraphSpec, product_key
from jobs.train import TrainingConfig, train_graphsage
from tests.jobs.sample_graphs import restored_store

SPEC = ProductGraphSpec(num_products=400, num_categories=6, seed=3)
SMALL = TrainingConfig(hidden=16, num_layers=2, fanouts=(5, 5), batch_size=64, epochs=3, seed=5)


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    return restored_store(tmp_path_factory.mktemp("train"), SPEC)


def _without_times(metrics: dict) -> dict:
    metrics = json.loads(json.dumps(metrics))
    metrics.pop("seconds")
    metrics.pop("checkpoint")
    metrics.pop("timing")
    for record in metrics["history"]:
        record.pop("seconds")
    return metrics


def test_two_runs_with_the_same_seed_give_identical_metrics_and_weights(store_path, tmp_path):
    with open_store(str(store_path)) as store:
        first = train_graphsage(store, tmp_path / "a.pth.tar", config=SMALL)
        second = train_graphsage(store, tmp_path / "b.pth.tar", config=SMALL)
        other = train_graphsage(store, tmp_path / "c.pth.tar", config=TrainingConfig(**{**SMALL.__dict__, "seed": 6}))
    assert _without_times(first) == _without_times(second)
    a, _ = load_checkpoint(tmp_path / "a.pth.tar")
    b, _ = load_checkpoint(tmp_path / "b.pth.tar")
    c, _ = load_checkpoint(tmp_path / "c.pth.tar")
    for name, tensor in a.state_dict().items():
        assert torch.equal(tensor, b.state_dict()[name]), name
    assert not torch.equal(a.state_dict()["convs.0.lin_l.weight"], c.state_dict()["convs.0.lin_l.weight"])
    assert first["split"]["sizes"] != other["split"]["sizes"] or first["history"] != other["history"]


def test_checkpoint_is_in_the_workshop_format_with_metrics_beside_it(store_path, tmp_path):
    out = tmp_path / "model.pth.tar"
    with open_store(str(store_path)) as store:
        metrics = train_graphsage(store, out, config=TrainingConfig(**{**SMALL.__dict__, "epochs": 4}))
    checkpoint = torch.load(out, map_location="cpu", weights_only=True)
    assert sorted(checkpoint) == ["best_acc", "epoch", "state_dict"]
    assert sorted(checkpoint["state_dict"]) == [
        "convs.0.lin_l.bias", "convs.0.lin_l.weight", "convs.0.lin_r.weight",
        "convs.1.lin_l.bias", "convs.1.lin_l.weight", "convs.1.lin_r.weight",
    ]
    assert checkpoint["state_dict"]["convs.0.lin_l.weight"].shape == (16, 100)
    assert checkpoint["state_dict"]["convs.1.lin_l.weight"].shape == (SPEC.num_categories, 16)
    # the best epoch is the one with the best validation accuracy, and that is what was saved
    best = max(metrics["history"], key=lambda r: (r["valid"], -r["epoch"]))
    assert checkpoint["epoch"] == metrics["best_epoch"] == best["epoch"]
    assert checkpoint["best_acc"] == pytest.approx(best["valid"])

    on_disk = json.loads(metrics_path(out).read_text())
    assert on_disk["accuracy"] == metrics["accuracy"]
    assert set(on_disk["accuracy"]) == {"train", "valid", "test"}
    assert on_disk["num_nodes"] == SPEC.num_products and on_disk["num_classes"] == SPEC.num_categories
    sizes = on_disk["split"]["sizes"]
    assert on_disk["split"]["source"] == "random" and sum(sizes.values()) == SPEC.num_products
    assert 0.5 < sizes["train"] / SPEC.num_products < 0.7
    held = on_disk["holdout_edges"]
    assert held["fraction"] == 0.1 and 0.05 * on_disk["num_edges"] < held["count"] < 0.15 * on_disk["num_edges"]
    assert on_disk["epochs_run"] == len(on_disk["history"]) == 4


def test_training_learns_the_planted_categories(store_path, tmp_path):
    with open_store(str(store_path)) as store:
        metrics = train_graphsage(store, tmp_path / "m.pth.tar",
                                  config=TrainingConfig(hidden=32, num_layers=2, fanouts=(10, 10), batch_size=32,
                                                        epochs=8, seed=1))
    # features alone are noisy; the graph makes the categories learnable
    assert metrics["accuracy"]["test"] > 0.8


def test_early_stopping_ends_patience_epochs_after_the_best(store_path, tmp_path):
    config = TrainingConfig(**{**SMALL.__dict__, "epochs": 40, "patience": 2, "learning_rate": 0.05})
    with open_store(str(store_path)) as store:
        metrics = train_graphsage(store, tmp_path / "m.pth.tar", config=config)
    assert metrics["stopped_early"] and metrics["epochs_run"] < 40
    assert metrics["epochs_run"] == metrics["best_epoch"] + 2
    later = [r["valid"] for r in metrics["history"] if r["epoch"] > metrics["best_epoch"]]
    assert all(v <= metrics["history"][metrics["best_epoch"] - 1]["valid"] for v in later)


def test_split_attribute_decides_train_valid_and_test(tmp_path):
    store_path = restored_store(tmp_path, SPEC)
    names = ["train"] * 200 + ["valid"] * 80 + ["test"] * 70 + [None] * 50
    with open_store(str(store_path)) as store:
        store.upsert_documents("products", [
            {**doc, "split": name} for doc, name in zip(
                store.get_documents("products", [product_key(i) for i in range(SPEC.num_products)]), names)
        ])
        metrics = train_graphsage(store, tmp_path / "m.pth.tar",
                                  config=TrainingConfig(**{**SMALL.__dict__, "split_attribute": "split"}))
    assert metrics["split"]["source"] == "attribute" and metrics["split"]["attribute"] == "split"
    assert metrics["split"]["sizes"] == {"train": 200, "valid": 80, "test": 70}


def test_unknown_split_value_names_the_document(tmp_path):
    store_path = restored_store(tmp_path, SPEC)
    with open_store(str(store_path)) as store:
        document = store.get_documents("products", [product_key(17)])[0]
        store.upsert_documents("products", [{**document, "split": "holdout"}])
    result = CliRunner().invoke(cli, ["--store", str(store_path), "train-graphsage", "--split-attribute", "split",
                                      "--out", str(tmp_path / "m.pth.tar")])
    assert result.exit_code == 1
    assert f"products/{product_key(17)}" in result.stderr and "'holdout'" in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "m.pth.tar").exists()


def test_empty_validation_split_is_refused_before_training(store_path, tmp_path):
    with open_store(str(store_path)) as store, pytest.raises(ConfigError, match="valid split has no labelled"):
        train_graphsage(store, tmp_path / "m.pth.tar", config=TrainingConfig(**{**SMALL.__dict__, "split": (1.0, 0.0)}))
    assert not (tmp_path / "m.pth.tar").exists()


def test_missing_label_attribute_is_a_clear_error(store_path, tmp_path):
    with open_store(str(store_path)) as store, pytest.raises(StoreError, match="carry a label"):
        train_graphsage(store, tmp_path / "m.pth.tar", label="absent", config=SMALL)


def test_cli_reports_progress_per_epoch_and_a_summary(store_path, tmp_path):
    out = tmp_path / "cli.pth.tar"
    result = CliRunner().invoke(cli, ["--store", str(store_path), "train-graphsage", "--out", str(out), "--epochs", "3",
                                      "--hidden", "16", "--fanouts", "5,5", "--seed", "2"])
    assert result.exit_code == 0, result.output
    epochs = [line for line in result.stderr.splitlines() if line.startswith("epoch")]
    assert [line.split()[1] for line in epochs] == ["1", "2", "3"]
    assert "valid" in epochs[0] and "loss" in epochs[0]
    assert result.stdout.startswith(f"saved {out}") and str(metrics_path(out)) in result.stdout
    summary = result.stdout.splitlines()[-1]
    assert summary.startswith("training: ") and "nodes/s on " in summary and "sampling " in summary
    metrics = json.loads(metrics_path(out).read_text())
    assert metrics["config"]["seed"] == 2 and metrics["config"]["fanouts"] == [5, 5]
    assert metrics["data"]["nodes"] == "products" and metrics["data"]["edges"] == "bought_together"


def test_cli_rejects_fanouts_that_do_not_parse(store_path, tmp_path):
    result = CliRunner().invoke(cli, ["--store", str(store_path), "train-graphsage", "--fanouts", "5,x",
                                      "--out", str(tmp_path / "m.pth.tar")])
    assert result.exit_code == 1 and "--fanouts" in result.stderr


def test_held_out_edges_stay_out_of_the_training_graph(store_path):
    from graphsvc.graph.datasets import load_node_graph
    from graphsvc.graph.splits import hold_out_edges, undirected_pairs

    with open_store(str(store_path)) as store:
        data = load_node_graph(store, "products", "bought_together")
    holdout = hold_out_edges(data.graph, data.keys, 0.1, seed=0)
    everything = {tuple(p) for p in undirected_pairs(data.graph).tolist()}
    kept = {tuple(p) for p in undirected_pairs(holdout.graph).tolist()}
    held = {tuple(p) for p in holdout.held_out.tolist()}
    assert held and not held & kept and held | kept == everything
    assert 0.07 < len(held) / len(everything) < 0.13
    # the same edges whatever order the nodes come in: the choice follows the keys
    order = np.random.default_rng(1).permutation(len(data.keys))
    inverse = np.argsort(order)
    from graphsvc.graph import CSRGraph

    pairs = undirected_pairs(data.graph)
    shuffled = CSRGraph.from_edges(inverse[pairs[:, 0]], inverse[pairs[:, 1]], len(order))
    again = hold_out_edges(shuffled, data.keys.take(order), 0.1, seed=0)
    assert {tuple(sorted(order[p].tolist())) for p in again.held_out} == held


def test_metrics_report_the_step_timing_and_the_samplers_share(store_path, tmp_path):
    with open_store(str(store_path)) as store:
        metrics = train_graphsage(store, tmp_path / "m.pth.tar", config=SMALL)
    timing = metrics["timing"]
    batches = -(-metrics["split"]["sizes"]["train"] // SMALL.batch_size) * SMALL.epochs
    assert timing["steps"] == batches and timing["nodes_per_s"] > 0
    assert 0 < timing["sample_share"] < 1 and 0 < timing["sample_s"] < timing["step_s"]
    assert metrics["device"] == "cpu"  # the tests run with GRAPHSVC_DEVICE unset on a CPU-only torch, or cpu


@pytest.mark.parametrize("found, env, expected", [(False, None, "cpu"), (True, None, "cuda"), (True, "cpu", "cpu")])
def test_cuda_is_chosen_only_when_torch_finds_it(monkeypatch, found, env, expected):
    from graphsvc.inference.runners import inference_device
    from jobs.train import training_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: found)
    monkeypatch.delenv("GRAPHSVC_DEVICE", raising=False)
    if env:
        monkeypatch.setenv("GRAPHSVC_DEVICE", env)
    assert training_device().type == inference_device().type == expected
    assert training_device("cpu").type == "cpu"


def test_asking_for_cuda_without_it_is_a_clear_error(monkeypatch):
    from jobs.train import training_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA device — use --device cpu"):
        training_device("cuda")
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        training_device("tpu")


def test_training_step_imports_with_torch_numpy_and_pyarrow_only():
    import subprocess
    import sys

    probe = ("import sys; import jobs.train; "
             "print(sorted(m for m in ('duckdb', 'faiss', 'tritonclient', 'click', 'arango') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_train_throughput_reports_rates_and_the_sampled_sizes():
    from graphsvc.graph import CSRGraph
    from jobs.train import train_throughput

    rng = np.random.default_rng(0)
    graph = CSRGraph.from_edges(rng.integers(0, 3000, 30000), rng.integers(0, 3000, 30000), 3000)
    features = rng.standard_normal((3000, 12), dtype=np.float32)
    labels = rng.integers(0, 4, 3000)
    result = train_throughput(graph, features, labels, np.arange(500), fanouts=(5, 3), batch_size=128, steps=3,
                              hidden=16, device="cpu")
    assert result["steps"] == 3 and result["device"] == "cpu" and result["nodes_per_s"] > 0
    assert [layer["rows"] for layer in result["layers"]][-1] == 128
    rows, inputs = result["layers"][0]["rows"], result["layers"][0]["inputs"]
    assert 128 < rows <= inputs <= 3000
    assert 0 < result["flop_per_step"] < result["flop_per_step_x3"]


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@needs_cuda
def test_training_on_cuda_learns_like_on_the_cpu(store_path, tmp_path):
    config = TrainingConfig(hidden=32, num_layers=2, fanouts=(10, 10), batch_size=32, epochs=8, seed=1)
    with open_store(str(store_path)) as store:
        gpu = train_graphsage(store, tmp_path / "g.pth.tar",
                              config=TrainingConfig(**{**config.__dict__, "device": "cuda"}))
    assert gpu["device"].startswith("cuda") and gpu["accuracy"]["test"] > 0.8


def test_batches_sampled_in_several_threads_are_those_sampled_in_turn():
    from graphsvc.graph import CSRGraph, NeighbourSampler
    from jobs.train import _prepared_batches

    rng = np.random.default_rng(3)
    graph = CSRGraph.from_edges(rng.integers(0, 800, 8000), rng.integers(0, 800, 8000), 800)
    batches = [np.arange(k, 800, 9)[:40] for k in range(7)]
    runs = [list(_prepared_batches(NeighbourSampler(graph, [5, 3], seed=2), batches, 10, pin=False, threads=t))
            for t in (0, 1, 3)]
    for prepared in zip(*runs):
        assert all(torch.equal(p.nodes, prepared[0].nodes) for p in prepared)
        for layers in zip(*(p.adjacencies for p in prepared)):
            assert all(torch.equal(a.matrix.col_indices(), layers[0].matrix.col_indices()) for a in layers)


def test_loaded_graph_is_float32_features_and_an_int32_csr(store_path):
    from graphsvc.graph.datasets import load_node_graph

    with open_store(str(store_path)) as store:
        data = load_node_graph(store, "products", "bought_together", batch_size=64)  # several chunks
        stored = store.get_documents("products", [data.keys[i].as_py() for i in (0, 150, 399)])
    assert data.features.dtype == np.float32 and data.features.shape == (SPEC.num_products, 100)
    np.testing.assert_array_equal(data.features[[0, 150, 399]], np.array([d["features"] for d in stored], np.float32))
    assert data.graph.indptr.dtype == data.graph.indices.dtype == np.int32


def test_features_of_different_lengths_are_named(tmp_path):
    from graphsvc.graph.datasets import load_node_graph

    path = restored_store(tmp_path, SPEC)
    with open_store(str(path)) as store:
        document = store.get_documents("products", [product_key(5)])[0]
        store.upsert_documents("products", [{**document, "features": document["features"][:7]}])
        with pytest.raises(StoreError, match="'features' arrays differ in length \\(7, 100\\)"):
            load_node_graph(store, "products", "bought_together")
