"""GraphSAGE as the workshop trained it: PyG's SAGEConv layers with mean aggregation.

The layers are `torch_geometric.nn.SAGEConv` itself, so the workshop's checkpoints
(`convs.N.lin_l.weight/bias`, `convs.N.lin_r.weight`) load unchanged and the model
scripts to TorchScript for Triton's libtorch backend. Training runs the same layers'
weights through a fused sparse route (`forward_blocks`), which a test pins to SAGEConv.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

import torch
from torch import Tensor, nn
from torch_geometric.nn import SAGEConv

from graphsvc.errors import ModelRepositoryError
from graphsvc.files import atomic_path
from graphsvc.graph import sparse_times

# tensor names of the exported model (TorchScript convention: <name>__<position>)
X, EDGE_INDEX, SIZES = "x__0", "edge_index__1", "sizes__2"
EMBEDDING, LOGITS = "embedding__0", "logits__1"


# the per-layer models of layer-wise inference: (node itself, mean of its neighbours) → next layer
LAYER_SELF, LAYER_NEIGHBOURS, LAYER_OUT = "self__0", "neighbours__1", "out__0"


def layer_model_name(model: str, layer: int) -> str:
    return f"{model}_layer{layer}"


def subgraph_request(features, subgraph) -> dict:
    """The model's input tensors for a sampled subgraph (`graphsvc.graph.SampledSubgraph`)."""
    return {X: features[subgraph.nodes], EDGE_INDEX: subgraph.edge_index, SIZES: subgraph.sizes}


class MeanAdjacency:
    """A layer's neighbour mean as a sparse CSR matrix [nodes it computes, input rows]
    with 1/degree per entry, and its transpose for the backward pass (only where the
    input needs a gradient: not for the first layer, whose input is the features).

    Training uses this instead of SAGEConv's edge-list message passing: a sparse-dense
    product is several times faster on CPU and needs no per-layer masking of the edge list."""

    def __init__(self, indptr, columns, num_inputs: int, transpose: bool):
        import warnings

        import numpy as np

        rows = len(indptr) - 1
        degrees = np.diff(indptr)
        weights = np.repeat((1.0 / np.maximum(degrees, 1)).astype(np.float32), degrees)
        with torch.sparse.check_sparse_tensor_invariants(enable=False), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            self.matrix = torch.sparse_csr_tensor(torch.from_numpy(indptr), torch.from_numpy(columns),
                                                  torch.from_numpy(weights), size=(rows, num_inputs))
            self.transposed = None
            if transpose:
                # counting sort by column: a stable argsort keeps each row's entries in order
                order = np.argsort(columns, kind="stable")
                t_indptr = np.zeros(num_inputs + 1, indptr.dtype)
                np.cumsum(np.bincount(columns, minlength=num_inputs), out=t_indptr[1:])
                owners = np.repeat(np.arange(rows, dtype=indptr.dtype), degrees)
                self.transposed = torch.sparse_csr_tensor(
                    torch.from_numpy(t_indptr), torch.from_numpy(owners[order]),
                    torch.from_numpy(weights[order]), size=(num_inputs, rows))

    @property
    def num_rows(self) -> int:
        return self.matrix.shape[0]

    def to(self, device, non_blocking: bool = False) -> "MeanAdjacency":
        moved = object.__new__(MeanAdjacency)
        moved.matrix = self.matrix.to(device, non_blocking=non_blocking)
        moved.transposed = None if self.transposed is None else self.transposed.to(device, non_blocking=non_blocking)
        return moved

    def pin_memory(self) -> "MeanAdjacency":
        pinned = object.__new__(MeanAdjacency)
        pinned.matrix = _pin_sparse(self.matrix)
        pinned.transposed = None if self.transposed is None else _pin_sparse(self.transposed)
        return pinned

def _pin_sparse(matrix: Tensor) -> Tensor:
    return torch.sparse_csr_tensor(matrix.crow_indices().pin_memory(), matrix.col_indices().pin_memory(),
                                   matrix.values().pin_memory(), size=matrix.shape)


class _SAGEBlock(torch.autograd.Function):
    """A SAGEConv layer on a mean adjacency A: A @ x @ W_l^T + b + x[:rows] @ W_r^T, with a
    hand-written backward, kept because SAGEConv's own routes train slower (100k nodes,
    fanouts 15,10,5: a step 2.5x slower on the edge list, ~25% slower on a CSR adjacency
    through torch.sparse.mm(reduce="mean")). There autograd zero-fills a gradient the size
    of x for the x[:rows] slice, adds it to A^T's product in a third buffer, and transposes
    A on every call; here x's gradient is A^T @ (g W_l) with g W_r added into its first rows
    in place, and not computed at all for the first layer (the features need none)."""

    @staticmethod
    def forward(ctx, x, w_l, bias, w_r, matrix, transposed):
        rows = matrix.shape[0]
        mean = sparse_times(matrix, x)
        out = torch.addmm(bias, mean, w_l.t())
        out.addmm_(x[:rows], w_r.t())
        ctx.save_for_backward(x, mean, w_l, w_r)
        ctx.transposed = transposed
        return out

    @staticmethod
    def backward(ctx, grad):
        x, mean, w_l, w_r = ctx.saved_tensors
        rows = grad.shape[0]
        grad_x = None
        if ctx.needs_input_grad[0]:
            if ctx.transposed is None:
                raise RuntimeError("this MeanAdjacency was built without its transpose (transpose=True)")
            grad_x = sparse_times(ctx.transposed, grad @ w_l)
            grad_x[:rows].addmm_(grad, w_r)
        grad_w_l = grad.t() @ mean if ctx.needs_input_grad[1] else None
        grad_bias = grad.sum(0) if ctx.needs_input_grad[2] else None
        grad_w_r = grad.t() @ x[:rows] if ctx.needs_input_grad[3] else None
        return grad_x, grad_w_l, grad_bias, grad_w_r, None, None


class _ReluDropout(torch.autograd.Function):
    """relu then dropout, in place on x, saving one mask (0 or 1/(1-p), zero where relu
    cut): a backward of one product instead of two. On CPU the mask is drawn by numpy
    from a seed torch's generator gives (torch.manual_seed still decides it), 8 or 16
    random bits per element (p rounded to a multiple of 1/65536), and the elementwise work is
    numpy's on the tensors' own memory: torch's CPU bernoulli_ draws a double per element
    and alone took a quarter of a training step here."""

    @staticmethod
    def forward(ctx, x, p: float):
        scale = 1.0 / (1.0 - p)
        if x.device.type == "cpu":
            import numpy as np

            values = x.detach().numpy()
            rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,))))
            # a byte per element where that draws p exactly (p = 0.5, the default), else two
            kind = np.uint8 if float(p * 256).is_integer() else np.uint16
            levels = 1 << (8 * np.dtype(kind).itemsize)
            bits = np.frombuffer(rng.bytes(values.size * np.dtype(kind).itemsize), kind)
            keep = (bits.reshape(values.shape) >= round(p * levels)) & (values > 0)
            factors = keep.astype(np.float32)
            factors *= np.float32(scale)
            values *= factors
            mask = torch.from_numpy(factors)
        else:
            mask = torch.empty_like(x).bernoulli_(1.0 - p).mul_(scale).masked_fill_(x <= 0, 0.0)
            x.mul_(mask)
        ctx.save_for_backward(mask)
        ctx.mark_dirty(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask, None


def mean_adjacencies(subgraph, training: bool = True) -> list[MeanAdjacency]:
    """One MeanAdjacency per layer for a sampled subgraph (`graphsvc.graph.SampledSubgraph`);
    for training, every layer but the first gets its transpose, for its input's gradient."""
    return [MeanAdjacency(*subgraph.adjacency(layer), transpose=training and layer > 0)
            for layer in range(len(subgraph.sizes))]


class GraphSAGE(nn.Module):
    """in → hidden → … → classes. Returns (embedding, logits) for the first `sizes[-1]`
    nodes; the embedding is the last hidden layer (after ReLU)."""

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int, num_layers: int = 3,
                 dropout: float = 0.5):
        super().__init__()
        dims = [in_channels] + [hidden_channels] * (num_layers - 1) + [out_channels]
        self.convs = nn.ModuleList([SAGEConv(dims[i], dims[i + 1], aggr="mean") for i in range(num_layers)])
        self.dropout = dropout

    def forward(self, x: Tensor, edge_index: Tensor, sizes: Tensor) -> Tuple[Tensor, Tensor]:
        num_layers = len(self.convs)
        size_list: List[int] = sizes.tolist()
        embedding = x
        for i, conv in enumerate(self.convs):
            # only the first num_dst nodes are needed by the next layer: their edges, as a bipartite graph
            num_dst = size_list[i]
            layer_edges = edge_index[:, edge_index[1] < num_dst]
            x = conv((x, x[:num_dst]), layer_edges, (x.size(0), num_dst))
            if i < num_layers - 1:
                x = torch.relu(x)
                embedding = x
                x = nn.functional.dropout(x, p=self.dropout, training=self.training)
        targets = size_list[num_layers - 1]
        return embedding[:targets], x

    @torch.jit.unused
    def forward_blocks(self, x: Tensor, adjacencies: List[MeanAdjacency]) -> Tuple[Tensor, Tensor]:
        """forward() for a subgraph given as per-layer mean adjacencies (`mean_adjacencies`):
        the same numbers (up to float rounding), the training path's faster route. Not
        part of the exported model."""
        num_layers = len(self.convs)
        embedding = x
        for i, conv in enumerate(self.convs):
            adjacency = adjacencies[i]
            x = _SAGEBlock.apply(x, conv.lin_l.weight, conv.lin_l.bias, conv.lin_r.weight,
                                 adjacency.matrix, adjacency.transposed)
            if i < num_layers - 1:
                if i == num_layers - 2:
                    embedding = torch.relu(x[: adjacencies[-1].num_rows])
                if self.training and self.dropout > 0:
                    x = _ReluDropout.apply(x, self.dropout)
                else:
                    x = torch.relu(x)
        return embedding[: adjacencies[-1].num_rows], x


class SAGELayerStep(nn.Module):
    """One layer as layer-wise inference serves it: the caller has already averaged the
    neighbours (a sparse product over the whole graph, done once per layer), the model
    applies the layer's weights and activation to a batch of nodes. SAGEConv's forward
    would average again from an edge list, so the step holds only its two linear maps."""

    def __init__(self, conv: SAGEConv, activation: bool):
        super().__init__()
        self.lin_l = conv.lin_l
        self.lin_r = conv.lin_r
        self.activation = activation

    def forward(self, x_self: Tensor, x_neighbours: Tensor) -> Tensor:
        out = self.lin_l(x_neighbours) + self.lin_r(x_self)
        return torch.relu(out) if self.activation else out


def layer_steps(model: GraphSAGE) -> list[SAGELayerStep]:
    last = len(model.convs) - 1
    return [SAGELayerStep(conv, activation=i < last) for i, conv in enumerate(model.convs)]


@dataclass(frozen=True)
class GraphSAGEShape:
    in_channels: int
    hidden_channels: int
    out_channels: int
    num_layers: int


def shape_of_state_dict(state_dict: dict) -> GraphSAGEShape:
    layers = sorted({int(k.split(".")[1]) for k in state_dict if k.startswith("convs.")})
    if not layers or layers != list(range(len(layers))):
        raise ModelRepositoryError("checkpoint has no convs.N.lin_l/lin_r layers (not a SAGE checkpoint)")
    first = state_dict["convs.0.lin_l.weight"]
    last = state_dict[f"convs.{layers[-1]}.lin_l.weight"]
    return GraphSAGEShape(
        in_channels=first.shape[1],
        hidden_channels=first.shape[0],
        out_channels=last.shape[0],
        num_layers=len(layers),
    )


def load_checkpoint(path: str | Path) -> tuple[GraphSAGE, dict]:
    """The model and the checkpoint's metadata (`epoch`, `best_acc`) from a workshop-format
    checkpoint `{"epoch", "best_acc", "state_dict"}`."""
    path = Path(path)
    if not path.exists():
        raise ModelRepositoryError(f"checkpoint {path} does not exist — train one with 'jobs train-graphsage'")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise ModelRepositoryError(f"cannot read checkpoint {path}: {exc}") from None
    state_dict = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if state_dict is None:
        raise ModelRepositoryError(f"{path}: no 'state_dict' (expected the workshop's checkpoint format)")
    shape = shape_of_state_dict(state_dict)
    model = GraphSAGE(shape.in_channels, shape.hidden_channels, shape.out_channels, shape.num_layers)
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    if missing:
        raise ModelRepositoryError(f"{path}: missing weights {', '.join(missing)}")
    model.eval()
    meta = {k: v for k, v in checkpoint.items() if k != "state_dict"}
    return model, meta


def save_checkpoint(path: str | Path, model: GraphSAGE, epoch: int, best_acc: float, **extra) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save({"epoch": epoch, "best_acc": best_acc, "state_dict": model.state_dict(), **extra}, tmp)
