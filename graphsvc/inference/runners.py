"""Where GraphSAGE's layers run: in this process with torch (CPU, or a GPU with the rows
kept on it between layers) or on Triton (the per-layer models `<model>_layerN`).

A runner applies one layer's weights to batches of (rows, their neighbour means) and says
where rows live between layers (`arrays`): the layer-wise driver (`layerwise`) is the
same for every runner.
"""

from __future__ import annotations

import copy
import functools
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Protocol, Sequence, TypeVar

import numpy as np
import torch

from graphsvc.errors import ModelRepositoryError
from graphsvc.graph import CSRGraph, NeighbourMean, sparse_times
from graphsvc.graph.aggregation import neighbour_mean_rows
from graphsvc.models.graphsage import LAYER_NEIGHBOURS, LAYER_OUT, LAYER_SELF, GraphSAGE, layer_model_name, layer_steps
from graphsvc.settings import DEVICE, read

if TYPE_CHECKING:  # tritonclient only where Triton is used (jobs.train imports this module)
    from graphsvc.triton.client import TritonClient

Rows = TypeVar("Rows", np.ndarray, torch.Tensor)
#: the rows of one batch: a range of all rows, or some rows by number
Batch = slice | np.ndarray

#: above this share of the graph's nodes, one product over the whole graph costs less
#: than gathering each row's neighbours
WHOLE_GRAPH_SHARE = 0.9


class HostArrays:
    """Rows as numpy arrays in this process's memory (the CPU's and Triton's runners)."""

    def put(self, array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(array, np.float32)

    def host(self, rows: np.ndarray) -> np.ndarray:
        return rows

    def join(self, parts: Sequence[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts)

    def neighbour_means(self, graph: CSRGraph, mean: Callable[[], NeighbourMean], inputs: np.ndarray,
                        rows: int) -> Callable[[Batch], np.ndarray]:
        """The neighbour means of a batch of rows, for a layer that computes `rows` rows:
        from one product over the whole graph (made on first use) when they are most of
        it, else from the batch's own edges."""
        if rows <= WHOLE_GRAPH_SHARE * graph.num_nodes:
            return lambda batch: neighbour_mean_rows(graph, _numbers(batch), inputs)
        whole = functools.cache(lambda: mean()(inputs))
        return lambda batch: whole()[batch]


class DeviceArrays:
    """Rows as torch tensors on a device: a layer's rows stay there for the next (2.45M ×
    256 floats is 2.5 GB, small beside a GPU's memory); only results come back."""

    def __init__(self, device: torch.device):
        self.device = device
        self._adjacency: tuple[NeighbourMean, torch.Tensor] | None = None

    def put(self, array: np.ndarray | torch.Tensor) -> torch.Tensor:
        if isinstance(array, np.ndarray):
            array = torch.from_numpy(np.ascontiguousarray(array, np.float32))
        return array.to(self.device)

    def host(self, rows: torch.Tensor) -> np.ndarray:
        return rows.cpu().numpy()

    def join(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat(list(parts))

    def neighbour_means(self, graph: CSRGraph, mean: Callable[[], NeighbourMean], inputs: torch.Tensor,
                        rows: int) -> Callable[[Batch], torch.Tensor]:
        """On a device one product over the whole graph is cheap for any number of rows."""

        @functools.cache
        def whole() -> torch.Tensor:
            neighbour_mean = mean()
            if self._adjacency is None or self._adjacency[0] is not neighbour_mean:  # moved once per graph
                self._adjacency = neighbour_mean, neighbour_mean.adjacency.to(self.device)
            with torch.inference_mode():
                return sparse_times(self._adjacency[1], inputs)

        return lambda batch: whole()[torch.as_tensor(batch, device=self.device) if isinstance(batch, np.ndarray)
                                     else batch]


class LayerRunner(Protocol[Rows]):
    """Applies GraphSAGE's layers to batches of rows."""

    @property
    def arrays(self) -> HostArrays | DeviceArrays: ...

    @property
    def num_layers(self) -> int: ...

    def model(self, layer: int) -> str:
        """The name errors give for the model of `layer`."""
        ...

    def apply_many(self, layer: int, batches: Iterable[tuple[Rows, Rows]]) -> Iterator[Rows]:
        """Layer `layer`'s output for each (rows, their neighbour means), in order."""
        ...


class TorchLayers:
    """The layers of a GraphSAGE in this process, on `device` (default: `inference_device()`)."""

    def __init__(self, model: GraphSAGE, device: str | torch.device | None = None, name: str = "graphsage"):
        device = inference_device(device)
        if device.type == "cpu":
            self.arrays: HostArrays | DeviceArrays = HostArrays()
            self._steps = layer_steps(model.eval())
        else:  # a copy: the caller's model stays where it was
            self.arrays = DeviceArrays(device)
            self._steps = layer_steps(copy.deepcopy(model).eval().to(device))
        self._name = name

    @property
    def num_layers(self) -> int:
        return len(self._steps)

    def model(self, layer: int) -> str:
        return layer_model_name(self._name, layer)

    def apply_many(self, layer: int, batches: Iterable[tuple[Rows, Rows]]) -> Iterator[Rows]:
        step = self._steps[layer]
        on_host = isinstance(self.arrays, HostArrays)
        for rows, neighbours in batches:
            with torch.inference_mode():
                if on_host:
                    yield step(torch.from_numpy(rows), torch.from_numpy(neighbours)).numpy()
                else:
                    yield step(rows, neighbours)


class TritonLayers:
    """The per-layer models (`layer_models`) on a Triton server, `max_in_flight`
    requests at a time."""

    def __init__(self, triton: TritonClient, models: Sequence[str], max_in_flight: int = 2):
        self.arrays = HostArrays()
        self._triton, self._models, self._max_in_flight = triton, list(models), max_in_flight

    @property
    def num_layers(self) -> int:
        return len(self._models)

    def model(self, layer: int) -> str:
        return self._models[layer]

    def apply_many(self, layer: int, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> Iterator[np.ndarray]:
        requests = ({LAYER_SELF: rows, LAYER_NEIGHBOURS: neighbours} for rows, neighbours in batches)
        for result in self._triton.infer_many(self._models[layer], requests, max_in_flight=self._max_in_flight):
            yield result[LAYER_OUT]


def layer_models(triton: TritonClient, model: str, hint: str = "") -> list[str]:
    """`<model>_layer0`, `<model>_layer1`, … as the server has them, in order. Raises
    ModelRepositoryError when it has none (`hint`: another way out, for the message)."""
    available = {status.name for status in triton.models()}
    layers: list[str] = []
    while layer_model_name(model, len(layers)) in available:
        layers.append(layer_model_name(model, len(layers)))
    if not layers:
        raise ModelRepositoryError(
            f"Triton at {triton.url} serves no '{layer_model_name(model, 0)}' — "
            f"export the per-layer models with 'jobs export-models'{f' ({hint})' if hint else ''}"
        )
    return layers


def inference_device(requested: str | torch.device | None = None) -> torch.device:
    """`requested`, else GRAPHSVC_DEVICE, else CUDA when torch finds it, else the CPU."""
    if requested is not None:
        return torch.device(requested)
    return torch.device(read(DEVICE) or ("cuda" if torch.cuda.is_available() else "cpu"))


def _numbers(batch: Batch) -> np.ndarray:
    return np.arange(batch.start, batch.stop) if isinstance(batch, slice) else batch
