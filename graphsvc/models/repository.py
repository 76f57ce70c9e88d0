"""Triton model repository: read and write `config.pbtxt`, list the models it holds.

The repository layout is the standard Triton one, loadable by an NGC `tritonserver`:

    model_repository/
      <model name>/
        config.pbtxt            # text-format `inference.ModelConfig`
        <version>/model.pt      # pytorch_libtorch: TorchScript
        <version>/model.onnx    # onnxruntime_onnx

`config.pbtxt` is parsed and written with the `ModelConfig` protobuf message that
tritonclient ships, so every field Triton knows round-trips unchanged.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from graphsvc.errors import ModelRepositoryError

ModelConfig = mc.ModelConfig
ModelInput = mc.ModelInput
ModelOutput = mc.ModelOutput

CONFIG_FILENAME = "config.pbtxt"

# Default model file name of each platform/backend, as Triton resolves it when the config
# has no `default_model_filename`.
DEFAULT_MODEL_FILENAMES = {
    "pytorch_libtorch": "model.pt",
    "pytorch": "model.pt",
    "onnxruntime_onnx": "model.onnx",
    "onnxruntime": "model.onnx",
    "python": "model.py",
    "tensorrt_plan": "model.plan",
    "tensorrt": "model.plan",
    "tensorflow_savedmodel": "model.savedmodel",
    "tensorflow_graphdef": "model.graphdef",
    "openvino": "model.xml",
}

_NUMPY_TO_TYPE = {
    np.dtype(np.bool_): "TYPE_BOOL",
    np.dtype(np.uint8): "TYPE_UINT8",
    np.dtype(np.uint16): "TYPE_UINT16",
    np.dtype(np.uint32): "TYPE_UINT32",
    np.dtype(np.uint64): "TYPE_UINT64",
    np.dtype(np.int8): "TYPE_INT8",
    np.dtype(np.int16): "TYPE_INT16",
    np.dtype(np.int32): "TYPE_INT32",
    np.dtype(np.int64): "TYPE_INT64",
    np.dtype(np.float16): "TYPE_FP16",
    np.dtype(np.float32): "TYPE_FP32",
    np.dtype(np.float64): "TYPE_FP64",
    np.dtype(np.object_): "TYPE_STRING",
}


def data_type(dtype: str | np.dtype | type) -> int:
    """The `DataType` enum value for "TYPE_FP32", "FP32", "fp32", "BYTES" or a numpy dtype."""
    if isinstance(dtype, str):
        name = dtype.strip().upper()
        if name == "BYTES":
            name = "STRING"
        if not name.startswith("TYPE_"):
            name = "TYPE_" + name
        try:
            return mc.DataType.Value(name)
        except ValueError:
            known = ", ".join(n for n in mc.DataType.keys() if n != "TYPE_INVALID")
            raise ValueError(f"unknown Triton data type {dtype!r} (known: {known})") from None
    try:
        return mc.DataType.Value(_NUMPY_TO_TYPE[np.dtype(dtype)])
    except (KeyError, TypeError):
        raise ValueError(f"numpy dtype {dtype!r} has no Triton data type") from None


def tensor(name: str, dtype: str | np.dtype | type, dims: Sequence[int], *, output: bool = False,
           optional: bool = False) -> ModelInput | ModelOutput:
    """Build a `ModelInput` (or a `ModelOutput` with output=True).

    `dims` excludes the batch dimension when the model has max_batch_size > 0; -1 marks
    a variable-size dimension.
    """
    if output:
        return ModelOutput(name=name, data_type=data_type(dtype), dims=list(dims))
    return ModelInput(name=name, data_type=data_type(dtype), dims=list(dims), optional=optional)


def input_tensor(name: str, dtype: str | np.dtype | type, dims: Sequence[int], *, optional: bool = False) -> ModelInput:
    return tensor(name, dtype, dims, optional=optional)  # type: ignore[return-value]


def output_tensor(name: str, dtype: str | np.dtype | type, dims: Sequence[int]) -> ModelOutput:
    return tensor(name, dtype, dims, output=True)  # type: ignore[return-value]


def model_config(
    name: str,
    *,
    inputs: Iterable[ModelInput],
    outputs: Iterable[ModelOutput],
    platform: str = "pytorch_libtorch",
    backend: str = "",
    max_batch_size: int = 0,
    dynamic_batching: bool = False,
    max_queue_delay_microseconds: int = 0,
    preferred_batch_size: Sequence[int] = (),
    instance_count: int | None = None,
    instance_kind: str = "KIND_CPU",
) -> ModelConfig:
    """Build a `ModelConfig` for the usual cases (everything else: set fields on the result)."""
    config = ModelConfig(name=name, platform=platform, backend=backend, max_batch_size=max_batch_size)
    config.input.extend(inputs)
    config.output.extend(outputs)
    if dynamic_batching:
        config.dynamic_batching.SetInParent()
        config.dynamic_batching.max_queue_delay_microseconds = max_queue_delay_microseconds
        config.dynamic_batching.preferred_batch_size.extend(preferred_batch_size)
    if instance_count is not None:
        group = config.instance_group.add()
        group.count = instance_count
        group.kind = mc.ModelInstanceGroup.Kind.Value(instance_kind)
    return config


def _config_path(path: str | os.PathLike) -> Path:
    """A model directory (existing, or any path not ending in .pbtxt) means its config.pbtxt."""
    path = Path(path)
    if path.is_dir() or (not path.exists() and path.suffix != ".pbtxt"):
        return path / CONFIG_FILENAME
    return path


def read_model_config(path: str | os.PathLike) -> ModelConfig:
    """Parse a `config.pbtxt` (or a model directory holding one)."""
    path = _config_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelRepositoryError(f"{path}: model configuration file does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelRepositoryError(f"{path}: cannot read model configuration: {exc}") from None
    config = ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise ModelRepositoryError(f"{path}: invalid model configuration: {exc}") from None
    return config


def format_model_config(config: ModelConfig) -> str:
    return text_format.MessageToString(config)


def write_model_config(path: str | os.PathLike, config: ModelConfig) -> Path:
    """Write `config` as text format to `path` (a .pbtxt file, or a model directory), atomically."""
    path = _config_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = format_model_config(config)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def model_filename(config: ModelConfig) -> str:
    """The file (or directory) Triton loads from each version directory of this model."""
    if config.default_model_filename:
        return config.default_model_filename
    return DEFAULT_MODEL_FILENAMES.get(config.platform) or DEFAULT_MODEL_FILENAMES.get(config.backend, "model")


@dataclass
class RepositoryModel:
    name: str
    directory: Path
    config: ModelConfig
    versions: list[int] = field(default_factory=list)

    @property
    def config_path(self) -> Path:
        return self.directory / CONFIG_FILENAME

    @property
    def model_filename(self) -> str:
        return model_filename(self.config)

    def model_file(self, version: int) -> Path:
        return self.directory / str(version) / self.model_filename

    @property
    def latest_version(self) -> int | None:
        return max(self.versions) if self.versions else None


def _version_dirs(directory: Path) -> list[int]:
    versions = []
    for entry in directory.iterdir():
        if entry.is_dir() and entry.name.isdigit() and not (entry.name.startswith("0") and entry.name != "0"):
            versions.append(int(entry.name))
    return sorted(versions)


def load_model(directory: str | os.PathLike) -> RepositoryModel:
    """Read one model directory: its config and the versions that hold a model file."""
    directory = Path(directory)
    config = read_model_config(directory / CONFIG_FILENAME)
    if not config.name:
        config.name = directory.name
    elif config.name != directory.name:
        raise ModelRepositoryError(
            f"{directory / CONFIG_FILENAME}: model name '{config.name}' does not match its directory '{directory.name}'"
        )
    filename = model_filename(config)
    if config.platform == "ensemble":
        versions = _version_dirs(directory)  # ensembles have empty version directories
    else:
        versions = [v for v in _version_dirs(directory) if (directory / str(v) / filename).exists()]
    return RepositoryModel(name=config.name, directory=directory, config=config, versions=versions)


def list_models(repository: str | os.PathLike) -> list[RepositoryModel]:
    """All models of a repository, sorted by name.

    Every sub-directory (except hidden ones) must hold a `config.pbtxt`: this repository
    has to load on an NGC server with the configuration taken as written.
    """
    repository = Path(repository)
    if not repository.is_dir():
        raise ModelRepositoryError(f"model repository {repository} does not exist or is not a directory")
    models = []
    for entry in sorted(repository.iterdir()):
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        if not (entry / CONFIG_FILENAME).exists():
            raise ModelRepositoryError(f"{entry}: model directory has no {CONFIG_FILENAME}")
        models.append(load_model(entry))
    return models
