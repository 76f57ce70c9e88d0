from pathlib import Path

import numpy as np
import pytest
import torch
from torch_geometric.nn import SAGEConv

from graphsvc.errors import ModelRepositoryError
from graphsvc.graph import CSRGraph, NeighbourSampler
from graphsvc.models.graphsage import (
    GraphSAGE,
    MeanAdjacency,
    layer_steps,
    load_checkpoint,
    save_checkpoint,
)

SHIPPED_CHECKPOINT = Path(__file__).resolve().parents[2] / "checkpoints" / "graphsage_products.pth.tar"
WORKSHOP_CHECKPOINT = (
    Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "checkpoints"
    / "obgn-products_cpu_weights_checkpoint.pth.tar"
)


def _mean_adjacency(edge_index: torch.Tensor, rows: int, inputs: int) -> MeanAdjacency:
    """The edges into the first `rows` nodes as the training route's CSR mean adjacency."""
    source, target = edge_index.numpy()
    order = np.argsort(target, kind="stable")
    order = order[target[order] < rows]
    indptr = np.zeros(rows + 1, np.int64)
    np.cumsum(np.bincount(target[order], minlength=rows), out=indptr[1:])
    return MeanAdjacency(indptr, source[order].astype(np.int64), inputs, transpose=False)


def test_every_route_through_our_layer_equals_a_bare_sageconv_with_the_same_weights():
    torch.manual_seed(0)
    x = torch.randn(30, 8)
    edge_index = torch.randint(0, 30, (2, 120))
    bare = SAGEConv(8, 5, aggr="mean")
    expected = bare(x, edge_index).detach()
    model = GraphSAGE(8, 16, 5, num_layers=1).eval()
    model.load_state_dict({f"convs.0.{key}": value for key, value in bare.state_dict().items()})
    with torch.no_grad():
        # the exported forward, computing only the first 10 nodes, eager and scripted
        _, eager = model(x, edge_index, torch.tensor([10]))
        _, scripted = torch.jit.script(model)(x, edge_index, torch.tensor([10]))
        # the training route on the mean adjacency
        adjacency = _mean_adjacency(edge_index, 10, 30)
        _, blocks = model.forward_blocks(x, [adjacency])
        # layer-wise inference's step, given the neighbour means, eager and scripted
        step = layer_steps(model)[0].eval()
        neighbours = adjacency.matrix @ x
        stepped = step(x[:10], neighbours)
        stepped_scripted = torch.jit.script(step)(x[:10], neighbours)
    assert torch.allclose(eager, expected[:10], atol=1e-5)
    assert torch.equal(scripted, eager)
    assert torch.allclose(blocks, expected[:10], atol=1e-5)
    assert torch.allclose(stepped, expected[:10], atol=1e-5)
    assert torch.equal(stepped_scripted, stepped)


def test_shipped_checkpoint_loads_into_sageconv_layers_with_its_keys_unchanged():
    raw = torch.load(SHIPPED_CHECKPOINT, map_location="cpu", weights_only=True)["state_dict"]
    model, _ = load_checkpoint(SHIPPED_CHECKPOINT)
    assert all(isinstance(conv, SAGEConv) for conv in model.convs)
    assert model.state_dict().keys() == raw.keys()
    assert all(torch.equal(model.state_dict()[key], value) for key, value in raw.items())
    # the whole model on a sampled subgraph equals a chain of bare SAGEConvs over every node
    rng = np.random.default_rng(3)
    graph = CSRGraph.from_edges(rng.integers(0, 300, 2000), rng.integers(0, 300, 2000), 300)
    sub = NeighbourSampler(graph, [5, 4, 3], seed=3).sample(np.arange(6))
    x = torch.randn(len(sub.nodes), 100)
    edge_index, sizes = torch.from_numpy(sub.edge_index), torch.from_numpy(sub.sizes)
    bare = [SAGEConv(100, 256, aggr="mean"), SAGEConv(256, 256, aggr="mean"), SAGEConv(256, 47, aggr="mean")]
    with torch.no_grad():
        h = x
        for i, conv in enumerate(bare):
            conv.load_state_dict({key[len(f"convs.{i}."):]: value for key, value in raw.items()
                                  if key.startswith(f"convs.{i}.")})
            h = conv(h, edge_index)
            h = h.relu() if i < 2 else h
        _, logits = model(x, edge_index, sizes)
        _, scripted = torch.jit.script(model)(x, edge_index, sizes)
    assert torch.allclose(logits, h[:6], atol=1e-4)
    assert torch.equal(scripted, logits)


def test_model_scripts_and_scripted_output_matches_eager(tmp_path):
    model = GraphSAGE(6, 16, 4).eval()
    scripted = torch.jit.script(model)
    rng = np.random.default_rng(0)
    graph = CSRGraph.from_edges(rng.integers(0, 200, 1000), rng.integers(0, 200, 1000), 200)
    sub = NeighbourSampler(graph, [5, 4, 3]).sample(np.arange(5))
    x = torch.randn(len(sub.nodes), 6)
    edge_index, sizes = torch.from_numpy(sub.edge_index), torch.from_numpy(sub.sizes)
    emb, logits = model(x, edge_index, sizes)
    emb2, logits2 = scripted(x, edge_index, sizes)
    assert emb.shape == (5, 16) and logits.shape == (5, 4)
    assert torch.allclose(emb, emb2) and torch.allclose(logits, logits2)


def test_trimmed_layers_equal_full_graph_computation_for_targets():
    # computing only what each layer needs gives the targets the same output as running
    # every layer over the whole sampled subgraph
    model = GraphSAGE(6, 16, 4).eval()
    rng = np.random.default_rng(1)
    graph = CSRGraph.from_edges(rng.integers(0, 100, 400), rng.integers(0, 100, 400), 100)
    sub = NeighbourSampler(graph, [-1, -1, -1]).sample(np.arange(4))
    x = torch.randn(len(sub.nodes), 6)
    edge_index = torch.from_numpy(sub.edge_index)
    n = len(sub.nodes)
    _, trimmed = model(x, edge_index, torch.from_numpy(sub.sizes))
    _, full = model(x, edge_index, torch.tensor([n, n, n]))
    assert torch.allclose(trimmed, full[:4], atol=1e-5)


def test_checkpoint_round_trip_in_workshop_format(tmp_path):
    model = GraphSAGE(6, 16, 4)
    save_checkpoint(tmp_path / "c.pth.tar", model, epoch=3, best_acc=0.5)
    raw = torch.load(tmp_path / "c.pth.tar", weights_only=True)
    assert set(raw) == {"epoch", "best_acc", "state_dict"}
    assert "convs.0.lin_l.weight" in raw["state_dict"] and "convs.2.lin_r.weight" in raw["state_dict"]
    loaded, meta = load_checkpoint(tmp_path / "c.pth.tar")
    assert meta == {"epoch": 3, "best_acc": 0.5}
    assert torch.equal(loaded.convs[1].lin_l.weight, model.convs[1].lin_l.weight)


def test_bad_checkpoint_is_named(tmp_path):
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelRepositoryError, match="bad.pth"):
        load_checkpoint(tmp_path / "bad.pth")
    with pytest.raises(ModelRepositoryError, match="does not exist"):
        load_checkpoint(tmp_path / "absent.pth")


@pytest.mark.skipif(not WORKSHOP_CHECKPOINT.exists(), reason="../shared/fixtures is absent (workshop checkpoint)")
def test_workshop_checkpoint_loads_with_its_shape():
    model, meta = load_checkpoint(WORKSHOP_CHECKPOINT)
    assert meta["epoch"] == 10 and abs(meta["best_acc"] - 0.918) < 1e-3
    assert [c.lin_l.weight.shape[0] for c in model.convs] == [256, 256, 47]
    assert model.convs[0].lin_l.weight.shape[1] == 100


def test_layer_steps_with_neighbour_means_equal_the_full_model():
    from graphsvc.graph import NeighbourMean

    model = GraphSAGE(6, 16, 4).eval()
    rng = np.random.default_rng(2)
    graph = CSRGraph.from_edges(rng.integers(0, 50, 300), rng.integers(0, 50, 300), 50)
    x = rng.normal(size=(50, 6)).astype(np.float32)
    mean = NeighbourMean(graph)
    h = x
    with torch.no_grad():
        for step in layer_steps(model):
            h = step(torch.from_numpy(h), torch.from_numpy(mean(h))).numpy()
        row = np.repeat(np.arange(50), graph.degree())
        edge_index = torch.from_numpy(np.stack([graph.indices, row]))
        _, logits = model(torch.from_numpy(x), edge_index, torch.tensor([50, 50, 50]))
    assert np.allclose(h, logits.numpy(), atol=1e-5)


def _sampled(seed=0, nodes=400, fanouts=(6, 4, 3)):
    rng = np.random.default_rng(seed)
    graph = CSRGraph.from_edges(rng.integers(0, nodes, 6000), rng.integers(0, nodes, 6000), nodes)
    return NeighbourSampler(graph, list(fanouts), seed=seed).sample(np.arange(0, nodes, 9))


def test_training_route_gives_the_exported_forwards_outputs_and_gradients():
    from graphsvc.models.graphsage import mean_adjacencies

    sub = _sampled()
    torch.manual_seed(0)
    model = GraphSAGE(8, 16, 5, dropout=0.0).train()
    x = torch.randn(len(sub.nodes), 8, requires_grad=True)
    embedding, logits = model(x, torch.from_numpy(sub.edge_index), torch.from_numpy(sub.sizes))
    (logits.square().sum() + embedding.sum()).backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters()}
    expected_x, x.grad = x.grad.clone(), None
    model.zero_grad()

    adjacencies = mean_adjacencies(sub)
    assert adjacencies[0].transposed is None and all(a.transposed is not None for a in adjacencies[1:])
    adjacencies[0] = MeanAdjacency(*sub.adjacency(0), transpose=True)  # to compare x's gradient too
    embedding2, logits2 = model.forward_blocks(x, adjacencies)
    (logits2.square().sum() + embedding2.sum()).backward()
    assert torch.allclose(embedding, embedding2, atol=1e-5) and torch.allclose(logits, logits2, atol=1e-5)
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad, expected[name], atol=1e-4), name
    assert torch.allclose(x.grad, expected_x, atol=1e-5)


def test_first_layer_without_a_transpose_refuses_a_gradient_for_its_input():
    from graphsvc.models.graphsage import mean_adjacencies

    sub = _sampled(1)
    model = GraphSAGE(8, 16, 5)
    x = torch.randn(len(sub.nodes), 8, requires_grad=True)
    _, logits = model.forward_blocks(x, mean_adjacencies(sub))
    with pytest.raises(RuntimeError, match="without its transpose"):
        logits.sum().backward()


def test_training_dropout_follows_the_torch_seed_and_drops_its_share():
    from graphsvc.models.graphsage import _ReluDropout, mean_adjacencies

    sub = _sampled(2)
    model = GraphSAGE(8, 16, 5, dropout=0.5).train()
    x = torch.randn(len(sub.nodes), 8)
    adjacencies = mean_adjacencies(sub)
    runs = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        runs.append(model.forward_blocks(x, adjacencies)[1])
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    torch.manual_seed(0)
    x = torch.rand(400, 500) - 0.25  # a quarter cut by the relu
    out = _ReluDropout.apply(x.clone(), 0.3)
    ratio = out[x > 0] / x[x > 0]
    assert bool(((ratio == 0) | ((ratio - 1 / 0.7).abs() < 1e-5)).all())
    assert abs(float((out[x > 0] == 0).float().mean()) - 0.3) < 0.01 and bool((out[x <= 0] == 0).all())


def test_training_dropout_at_the_default_rate_drops_half():
    from graphsvc.models.graphsage import _ReluDropout

    torch.manual_seed(1)
    x = torch.rand(300, 400) + 0.1
    out = _ReluDropout.apply(x.clone(), 0.5)
    assert abs(float((out == 0).float().mean()) - 0.5) < 0.01
    assert torch.allclose(out[out != 0], 2 * x[out != 0])
