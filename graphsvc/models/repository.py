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

import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from graphsvc.errors import ModelRepositoryError
from graphsvc.files import write_text

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
    return write_text(path, text, durable=True)


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
    if not (directory / CONFIG_FILENAME).exists():
        raise ModelRepositoryError(f"{directory}: model directory has no {CONFIG_FILENAME}")
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


def model_directories(repository: str | os.PathLike) -> list[Path]:
    """The model directories of a repository (every sub-directory but hidden ones), sorted by name."""
    repository = Path(repository)
    if not repository.is_dir():
        raise ModelRepositoryError(f"model repository {repository} does not exist or is not a directory")
    return [e for e in sorted(repository.iterdir()) if e.is_dir() and not e.name.startswith(".")]


def list_models(repository: str | os.PathLike) -> list[RepositoryModel]:
    """All models of a repository, sorted by name.

    Every model directory must hold a `config.pbtxt`: this repository has to load on an
    NGC server with the configuration taken as written.
    """
    return [load_model(directory) for directory in model_directories(repository)]


# --------------------------------------------------------------------------------------
# versions: publish a new one atomically, keep or prune the older ones

# beside the model file(s) of each exported version: what the export was made from
EXPORT_STAMP = ".graphsvc-export.json"


@dataclass(frozen=True)
class PublishedVersion:
    name: str
    version: int
    path: Path  # the version directory
    status: str  # "new", "replaced" (same version number, new content) or "unchanged"
    removed: tuple[int, ...] = ()  # older versions deleted (--keep)


def _same_file(a: Path, b: Path) -> bool:
    return a.stat().st_size == b.stat().st_size and a.read_bytes() == b.read_bytes()


def _export_digest(version_dir: Path) -> str | None:
    try:
        return json.loads((version_dir / EXPORT_STAMP).read_text())["digest"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def same_version_content(a: Path, b: Path) -> bool:
    """True when two version directories hold the same model: equal export digests when both
    were exported by graphsvc (TorchScript files of the same module differ byte-wise from
    one save to the next), else the same files with the same bytes."""
    digest_a, digest_b = _export_digest(a), _export_digest(b)
    if digest_a is not None or digest_b is not None:
        return digest_a == digest_b

    def files(root: Path) -> dict[str, Path]:
        return {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file()
                and not any(part.startswith(".") or part == "__pycache__" for part in p.relative_to(root).parts)}

    files_a, files_b = files(a), files(b)
    return files_a.keys() == files_b.keys() and all(_same_file(files_a[k], files_b[k]) for k in files_a)


def _signature(config: ModelConfig) -> tuple:
    return (
        config.max_batch_size,
        tuple((t.name, t.data_type, tuple(t.dims)) for t in config.input),
        tuple((t.name, t.data_type, tuple(t.dims)) for t in config.output),
    )


def describe_signature(config: ModelConfig) -> str:
    def side(tensors) -> str:
        return ", ".join(f"{t.name} {mc.DataType.Name(t.data_type)[5:]}{list(t.dims)}" for t in tensors)

    return f"max_batch_size {config.max_batch_size}; in: {side(config.input)}; out: {side(config.output)}"


def _remove_tree(path: Path) -> None:
    import shutil

    trash = path.with_name(f".removing-{path.name}-{os.getpid()}")
    os.rename(path, trash)  # gone from the repository at once, deleted after
    shutil.rmtree(trash, ignore_errors=True)


def publish_version(
    repository: str | os.PathLike,
    config: ModelConfig,
    write_files: Callable[[Path], None],
    *,
    version: int | None = None,
    replace: bool = False,
    keep: int | None = None,
    digest: str | None = None,
) -> PublishedVersion:
    """Write one version of a model into `repository/<config.name>/`, atomically.

    `write_files(directory)` puts the model file(s) into a hidden staging directory,
    which is renamed into place as `<version>/` once complete (a server polling the
    repository never sees half a model). The version number: `version` when given,
    else the latest one plus 1 — unless the new files equal the latest version's, in
    which case nothing is written (status "unchanged"). `replace` overwrites the target
    version (default: the latest) instead of adding one; an existing different version
    is never overwritten without it. Older versions are kept, except with `keep=N`
    (the newest N stay). `digest` identifies what the files were made from (recorded in
    the version directory; two exports with the same digest are the same model). A new
    tensor signature would not match the older versions, so
    it is refused while any of them would stay (use keep=1 or replace the only one).
    """
    if keep is not None and keep < 1:
        raise ModelRepositoryError(f"keep must be at least 1, got {keep}")
    name = config.name
    model_dir = Path(repository) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = model_dir / f".staging-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        write_files(staging)
        if digest is not None:
            (staging / EXPORT_STAMP).write_text(json.dumps({"digest": digest}) + "\n")
        existing = _version_dirs(model_dir)
        latest = existing[-1] if existing else None
        if version is None:
            if latest is not None and not replace and same_version_content(staging, model_dir / str(latest)):
                return _unchanged(name, latest, model_dir, config, keep, replace)
            target = (latest or 1) if replace else (latest or 0) + 1
        else:
            target = version
        target_dir = model_dir / str(target)
        exists = target_dir.exists()
        if exists and same_version_content(staging, target_dir):
            return _unchanged(name, target, model_dir, config, keep, replace)
        if exists and not replace:
            raise ModelRepositoryError(
                f"{target_dir} already holds a different model — pass --replace to overwrite it, "
                f"or leave out --version to add version {(latest or 0) + 1}"
            )
        staying = sorted(set(existing) | {target})
        if keep is not None:
            staying = staying[-keep:]
        others = [v for v in staying if v != target]
        if (model_dir / CONFIG_FILENAME).exists() and others:
            old = read_model_config(model_dir)
            if _signature(old) != _signature(config):
                raise ModelRepositoryError(
                    f"model '{name}': the new version's signature ({describe_signature(config)}) differs from "
                    f"{model_dir / CONFIG_FILENAME} ({describe_signature(old)}), which versions "
                    f"{', '.join(map(str, others))} were exported for — pass --keep 1 to drop them"
                )
        write_model_config(model_dir, config)
        if exists:
            _remove_tree(target_dir)
        os.rename(staging, target_dir)
        status = "replaced" if exists else "new"
        return _prune(PublishedVersion(name, target, target_dir, status), model_dir, keep)
    finally:
        if staging.exists():
            import shutil

            shutil.rmtree(staging, ignore_errors=True)


def _unchanged(name: str, version: int, model_dir: Path, config: ModelConfig, keep: int | None,
               replace: bool) -> PublishedVersion:
    """The model files are already there; only a changed config.pbtxt (e.g. instance count) is written."""
    config_path = model_dir / CONFIG_FILENAME
    status = "unchanged"
    if not config_path.exists() or read_model_config(config_path) != config:
        if not replace and config_path.exists() and _signature(read_model_config(config_path)) != _signature(config):
            raise ModelRepositoryError(
                f"model '{name}': {config_path} does not describe the model files of version {version} "
                f"({describe_signature(config)}) — pass --replace to rewrite it"
            )
        write_model_config(model_dir, config)
        status = "config updated"
    return _prune(PublishedVersion(name, version, model_dir / str(version), status), model_dir, keep)


def _prune(published: PublishedVersion, model_dir: Path, keep: int | None) -> PublishedVersion:
    if keep is None:
        return published
    versions = _version_dirs(model_dir)
    staying = set(versions[-keep:]) | {published.version}
    removed = tuple(v for v in versions if v not in staying)
    for v in removed:
        _remove_tree(model_dir / str(v))
    return PublishedVersion(published.name, published.version, published.path, published.status, removed)
