"""Graph-aware movie embeddings: a heterogeneous GraphSAGE over movies and the
feature-less nodes around them (people, users, genres).

Movies start from their sentence-encoder vectors; a person is the mean of its movies, so
per relation r a movie layer sees the two-hop mean `mean_r` (`graphsvc.graph.relations`):

    h' = normalise(act(W_self h + Σ_r W_r mean_r(h)))

Each layer is one Triton model with the product layers' two inputs: `self__0` [n, d] and
`neighbours__1` [n, R·d] (the R relation means side by side — the [n, (R+1)·d] concat
split where the client already has it split), so the layer-wise machinery
(`graphsvc.inference`: the client computes the means, Triton applies the weights) runs it
unchanged. The weights start as "own text plus the neighbours' mean" (W_self = I,
W_r = I/R) so an untrained model is the parameter-free baseline, and training
(`jobs train-movies`) moves it from there.
"""

from __future__ import annotations

from pathlib import Path
from typing import List

import torch
from torch import Tensor, nn

from graphsvc.errors import ModelRepositoryError
from graphsvc.files import atomic_path
from graphsvc.models.graphsage import LAYER_NEIGHBOURS, LAYER_OUT, LAYER_SELF  # noqa: F401 (the layer tensor names)

#: the relations a model trained for genre similarity may use: never `has_genre` (that is
#: the measure) — people only
DEFAULT_RELATIONS = ("directed_by", "acted_in")


class MovieGraphLayer(nn.Module):
    """One layer as Triton serves it: (rows, their R relation means side by side) → unit rows."""

    def __init__(self, in_dim: int, out_dim: int, relations: int, activation: bool):
        super().__init__()
        self.self_linear = nn.Linear(in_dim, out_dim)
        self.relation_linear = nn.Linear(relations * in_dim, out_dim, bias=False)
        self.activation = activation
        with torch.no_grad():  # start as "own vector plus the relations' mean"
            self.self_linear.weight.copy_(torch.eye(out_dim, in_dim))
            self.self_linear.bias.zero_()
            self.relation_linear.weight.copy_(torch.eye(out_dim, in_dim).repeat(1, relations) / max(relations, 1))

    def forward(self, x_self: Tensor, x_neighbours: Tensor) -> Tensor:
        out = self.self_linear(x_self) + self.relation_linear(x_neighbours)
        if self.activation:
            out = torch.tanh(out)
        return nn.functional.normalize(out, dim=1)


class MovieGraphModel(nn.Module):
    """Layers in order; `relations` names the edge collections in the order of each
    layer's neighbour blocks."""

    def __init__(self, in_dim: int = 384, hidden: int = 384, num_layers: int = 2,
                 relations: tuple[str, ...] = DEFAULT_RELATIONS, activation: bool = False):
        super().__init__()
        dims = [in_dim] + [hidden] * num_layers
        self.relations = tuple(relations)
        self.hidden, self.in_dim, self.activation = hidden, in_dim, activation
        self.layers = nn.ModuleList([MovieGraphLayer(dims[i], dims[i + 1], len(relations), activation)
                                     for i in range(num_layers)])

    @torch.jit.unused
    def forward_full(self, x: Tensor, means: List[Tensor]) -> Tensor:
        """Every movie's last layer, in this process: `means` are the relations' torch
        sparse [movies, movies] matrices (training: autograd through them)."""
        h = x
        for layer in self.layers:
            neighbours = torch.cat([torch.sparse.mm(mean, h) for mean in means], dim=1)
            h = layer(h, neighbours)
        return h

    def settings(self) -> dict:
        return {"in_dim": self.in_dim, "hidden": self.hidden, "num_layers": len(self.layers),
                "relations": list(self.relations), "activation": self.activation}


def load_movie_checkpoint(path: str | Path) -> tuple[MovieGraphModel, dict]:
    """The model and the checkpoint's metadata from `{"settings", "state_dict", …}`."""
    path = Path(path)
    if not path.exists():
        raise ModelRepositoryError(f"checkpoint {path} does not exist — train one with 'jobs train-movies'")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise ModelRepositoryError(f"cannot read checkpoint {path}: {exc}") from None
    if not isinstance(checkpoint, dict) or "settings" not in checkpoint or "state_dict" not in checkpoint:
        raise ModelRepositoryError(f"{path}: not a movie graph checkpoint (no 'settings'/'state_dict') — "
                                   "train one with 'jobs train-movies'")
    settings = checkpoint["settings"]
    model = MovieGraphModel(settings["in_dim"], settings["hidden"], settings["num_layers"],
                            tuple(settings["relations"]), settings.get("activation", False))
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), {k: v for k, v in checkpoint.items() if k != "state_dict"}


def save_movie_checkpoint(path: str | Path, model: MovieGraphModel, **extra) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save({"settings": model.settings(), "state_dict": model.state_dict(), **extra}, tmp)
