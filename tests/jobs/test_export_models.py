import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from graphsvc.graph import CSRGraph, NeighbourSampler
from graphsvc.models.graphsage import GraphSAGE, layer_steps, load_checkpoint, save_checkpoint, subgraph_request
from graphsvc.models.repository import list_models, mc, read_model_config
from graphsvc.triton.client import TritonClient
from graphsvc.triton.process import TritonServer
from graphsvc.triton.runtime_repository import runtime_config
from jobs.cli import cli
from tests.support import free_ports

WORKSHOP_CHECKPOINT = "checkpoints/obgn-products_cpu_weights_checkpoint.pth.tar"


def test_workshop_checkpoint_exports_with_its_real_signature(shared_fixtures, tmp_path):
    checkpoint = shared_fixtures / WORKSHOP_CHECKPOINT
    result = CliRunner().invoke(cli, ["export-models", "--model-repository", str(tmp_path), "--checkpoint",
                                      str(checkpoint), "--no-text", "--no-movies"])
    assert result.exit_code == 0, result.output
    models = {m.name: m for m in list_models(tmp_path)}
    assert sorted(models) == ["graphsage", "graphsage_layer0", "graphsage_layer1", "graphsage_layer2"]
    assert all(m.versions == [1] for m in models.values())
    layer_dims = []
    for layer in range(3):
        layer_config = read_model_config(tmp_path / f"graphsage_layer{layer}" / "config.pbtxt")
        assert layer_config.max_batch_size > 0
        layer_dims.append([list(t.dims) for t in (*layer_config.input, *layer_config.output)])
    assert layer_dims == [[[100], [100], [256]], [[256], [256], [256]], [[256], [256], [47]]]
    config = read_model_config(tmp_path / "graphsage" / "config.pbtxt")
    assert config.platform == "pytorch_libtorch" and config.max_batch_size == 0
    assert [list(i.dims) for i in config.input] == [[-1, 100], [2, -1], [3]]
    assert [list(o.dims) for o in config.output] == [[-1, 256], [-1, 47]]

    # the exported TorchScript computes what the checkpoint computes in eager mode
    scripted = torch.jit.load(str(tmp_path / "graphsage" / "1" / "model.pt"))
    eager, _ = load_checkpoint(checkpoint)
    rng = np.random.default_rng(0)
    graph = CSRGraph.from_edges(rng.integers(0, 300, 3000), rng.integers(0, 300, 3000), 300)
    request = subgraph_request(rng.normal(size=(300, 100)).astype(np.float32),
                               NeighbourSampler(graph, [15, 10, 5]).sample(np.arange(20)))
    inputs = [torch.from_numpy(v) for v in request.values()]
    with torch.inference_mode():
        for ours, theirs in zip(scripted(*inputs), eager(*inputs)):
            assert ours.shape[0] == 20
            assert torch.allclose(ours, theirs, atol=1e-5)


def test_sentence_encoder_export_is_dynamically_batched(tmp_path):
    result = CliRunner().invoke(cli, ["export-models", "--model-repository", str(tmp_path), "--no-graphsage"])
    assert result.exit_code == 0, result.output
    config = read_model_config(tmp_path / "sentence_encoder" / "config.pbtxt")
    assert config.max_batch_size == 64 and config.HasField("dynamic_batching")
    assert [list(o.dims) for o in config.output] == [[384]]
    assert (tmp_path / "sentence_encoder" / "1" / "model.pt").stat().st_size > 80_000_000


def test_missing_checkpoint_is_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["export-models", "--model-repository", str(tmp_path), "--checkpoint",
                                      str(tmp_path / "absent.pth.tar")])
    assert result.exit_code == 1
    assert "absent.pth.tar does not exist" in result.stderr and "jobs train-graphsage" in result.stderr


def test_workshop_checkpoint_serves_through_triton(shared_fixtures, tmp_path):
    checkpoint = shared_fixtures / WORKSHOP_CHECKPOINT
    repo = tmp_path / "repo"
    result = CliRunner().invoke(cli, ["export-models", "--model-repository", str(repo), "--checkpoint",
                                      str(checkpoint), "--no-text", "--no-movies"])
    assert result.exit_code == 0, result.output
    eager, _ = load_checkpoint(checkpoint)
    rng = np.random.default_rng(1)
    features = rng.normal(size=(300, 100)).astype(np.float32)
    graph = CSRGraph.from_edges(rng.integers(0, 300, 3000), rng.integers(0, 300, 3000), 300)
    request = subgraph_request(features, NeighbourSampler(graph, [15, 10, 5]).sample(np.arange(32)))
    http, grpc, metrics = free_ports(3)
    with TritonServer(repo, http_port=http, grpc_port=grpc, metrics_port=metrics) as server, \
            TritonClient(server.grpc_url, retries=0) as client:
        assert sorted(s.name for s in client.models() if s.ready) == [
            "graphsage", "graphsage_layer0", "graphsage_layer1", "graphsage_layer2"]
        served = client.infer("graphsage", request)
        x = features[:64]
        layer0 = client.infer("graphsage_layer0", {"self__0": x, "neighbours__1": x[::-1].copy()})["out__0"]
    with torch.inference_mode():
        embedding, logits = eager(*(torch.from_numpy(v) for v in request.values()))
        expected_layer0 = layer_steps(eager)[0](torch.from_numpy(x), torch.from_numpy(x[::-1].copy()))
    np.testing.assert_allclose(served["embedding__0"], embedding.numpy(), atol=1e-4)
    np.testing.assert_allclose(served["logits__1"], logits.numpy(), atol=1e-4)
    np.testing.assert_allclose(layer0, expected_layer0.numpy(), atol=1e-4)


def _checkpoint(path, seed: int, hidden: int = 16):
    torch.manual_seed(seed)
    save_checkpoint(path, GraphSAGE(8, hidden, 4, num_layers=2), epoch=1, best_acc=0.5)
    return path


def _export(repo, checkpoint, *extra):
    result = CliRunner().invoke(cli, ["export-models", "--model-repository", str(repo), "--checkpoint", str(checkpoint),
                                      "--no-text", "--no-movies", "--json", *extra])
    return result, (json.loads(result.stdout) if result.exit_code == 0 else None)


def _versions(repo, name="graphsage"):
    return sorted(int(p.name) for p in (repo / name).iterdir() if p.name.isdigit())


def test_exports_are_versions_and_older_ones_are_kept(tmp_path):
    repo = tmp_path / "repo"
    first, second = _checkpoint(tmp_path / "a.pth.tar", 1), _checkpoint(tmp_path / "b.pth.tar", 2)

    _, out = _export(repo, first)
    assert [(m["name"], m["version"], m["status"]) for m in out] == [
        ("graphsage", 1, "new"), ("graphsage_layer0", 1, "new"), ("graphsage_layer1", 1, "new")]
    _, out = _export(repo, first)  # the same model again: nothing new
    assert {(m["version"], m["status"]) for m in out} == {(1, "unchanged")}
    assert _versions(repo) == [1]

    _, out = _export(repo, second)
    assert {(m["version"], m["status"]) for m in out} == {(2, "new")}
    assert _versions(repo) == [1, 2] and _versions(repo, "graphsage_layer1") == [1, 2]
    # each version holds its own checkpoint's weights
    x = torch.randn(3, 8)
    for version, checkpoint in ((1, first), (2, second)):
        scripted = torch.jit.load(str(repo / "graphsage_layer0" / str(version) / "model.pt"))
        eager = layer_steps(load_checkpoint(checkpoint)[0])[0]
        assert torch.allclose(scripted(x, x), eager(x, x))

    _, out = _export(repo, first)  # back to the first model: a third version, not a rewrite of the first
    assert {(m["version"], m["status"]) for m in out} == {(3, "new")}

    _, out = _export(repo, second, "--keep", "2")
    assert {(m["version"], m["status"]) for m in out} == {(4, "new")}
    assert all(m["removed_versions"] == [1, 2] for m in out)
    assert _versions(repo) == [3, 4]
    assert not [p for p in (repo / "graphsage").iterdir() if p.name.startswith(".")]  # no staging left


def test_existing_version_is_only_overwritten_with_replace(tmp_path):
    repo = tmp_path / "repo"
    first, second = _checkpoint(tmp_path / "a.pth.tar", 1), _checkpoint(tmp_path / "b.pth.tar", 2)
    _export(repo, first)
    before = (repo / "graphsage" / "1" / "model.pt").read_bytes()
    result, _ = _export(repo, second, "--version", "1")
    assert result.exit_code == 1
    assert "graphsage/1 already holds a different model" in result.stderr and "--replace" in result.stderr
    assert (repo / "graphsage" / "1" / "model.pt").read_bytes() == before  # nothing touched

    result, out = _export(repo, second, "--replace")
    assert result.exit_code == 0, result.output
    assert {(m["version"], m["status"]) for m in out} == {(1, "replaced")}
    assert _versions(repo) == [1]
    scripted = torch.jit.load(str(repo / "graphsage_layer0" / "1" / "model.pt"))
    x = torch.randn(2, 8)
    assert torch.allclose(scripted(x, x), layer_steps(load_checkpoint(second)[0])[0](x, x))


def test_new_signature_beside_older_versions_is_refused(tmp_path):
    repo = tmp_path / "repo"
    _export(repo, _checkpoint(tmp_path / "a.pth.tar", 1, hidden=16))
    wider = _checkpoint(tmp_path / "wide.pth.tar", 1, hidden=32)
    result, _ = _export(repo, wider)
    assert result.exit_code == 1
    assert "signature" in result.stderr and "--keep 1" in result.stderr
    assert _versions(repo) == [1]
    result, out = _export(repo, wider, "--keep", "1")
    assert result.exit_code == 0, result.output
    assert _versions(repo) == [2]
    assert [list(o.dims) for o in read_model_config(repo / "graphsage").output] == [[-1, 32], [-1, 4]]


def test_instance_count_change_rewrites_only_the_config(tmp_path):
    repo = tmp_path / "repo"
    checkpoint = _checkpoint(tmp_path / "a.pth.tar", 1)
    _export(repo, checkpoint)
    result, out = _export(repo, checkpoint, "--instances", "2")
    assert {(m["version"], m["status"]) for m in out} == {(1, "config updated")}
    assert read_model_config(repo / "graphsage_layer0").instance_group[0].count == 2
    assert _versions(repo) == [1]


def test_instance_kind_gpu_writes_kind_gpu_groups_and_the_local_server_still_runs_them_on_cpu(tmp_path):
    repo = tmp_path / "repo"
    checkpoint = _checkpoint(tmp_path / "a.pth.tar", 1)
    result, out = _export(repo, checkpoint, "--instance-kind", "gpu")
    assert result.exit_code == 0, result.output
    gpu = mc.ModelInstanceGroup.KIND_GPU
    for name in ("graphsage", "graphsage_layer0"):
        assert [g.kind for g in read_model_config(repo / name).instance_group] == [gpu]
    # what 'graphsvc triton serve' generates for this CPU-only tritonserver runs them on the CPU
    layer0 = next(m for m in list_models(repo) if m.name == "graphsage_layer0")
    runtime = runtime_config(layer0, "torchscript")
    assert [g.kind for g in runtime.instance_group] == [mc.ModelInstanceGroup.KIND_CPU]
    # back to cpu: the model files stay, only the config changes
    result, out = _export(repo, checkpoint, "--instance-kind", "cpu")
    assert {(m["version"], m["status"]) for m in out} == {(1, "config updated")}
    assert read_model_config(repo / "graphsage").instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU


@pytest.mark.parametrize("option", [["--keep", "0"], ["--version", "0"], ["--instances", "0"],
                                    ["--instance-kind", "tpu"]])
def test_bad_version_options_are_refused(tmp_path, option):
    result, _ = _export(tmp_path / "repo", _checkpoint(tmp_path / "a.pth.tar", 1), *option)
    assert result.exit_code == 2 and option[0] in result.output


def test_the_shipped_movie_model_exports_its_layers_naming_their_relations(tmp_path):
    from jobs.export_models import DEFAULT_MOVIE_CHECKPOINT

    result = CliRunner().invoke(cli, ["export-models", "--model-repository", str(tmp_path), "--no-graphsage",
                                      "--no-text", "--movie-checkpoint", str(Path(__file__).parents[2] /
                                                                              DEFAULT_MOVIE_CHECKPOINT)])
    assert result.exit_code == 0, result.output
    assert sorted(m.name for m in list_models(tmp_path)) == ["movie_graph_layer0", "movie_graph_layer1"]
    config = read_model_config(tmp_path / "movie_graph_layer0" / "config.pbtxt")
    assert config.parameters["relations"].string_value == "directed_by,acted_in"
    assert [list(i.dims) for i in config.input] == [[384], [768]] and config.max_batch_size == 65_536
