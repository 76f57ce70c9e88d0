import numpy as np
import torch
from click.testing import CliRunner

from graphsvc.graph import CSRGraph, NeighbourSampler
from graphsvc.models.graphsage import load_checkpoint, subgraph_request
from graphsvc.models.repository import list_models, read_model_config
from jobs.cli import cli


def test_workshop_checkpoint_exports_with_its_real_signature(shared_fixtures, tmp_path):
    checkpoint = shared_fixtures / "checkpoints" / "obgn-products_cpu_weights_checkpoint.pth.tar"
    result = CliRunner().invoke(cli, ["export-models", "--model-repository", str(tmp_path), "--checkpoint",
                                      str(checkpoint), "--no-text"])
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
