"""Generate the runtime model repository that the pytriton build of tritonserver can serve.

The committed `model_repository/` is written for an NGC server (`pytorch_libtorch`
TorchScript, `onnxruntime_onnx`), but the pytriton build only has the Python backend.
So the server is given a *runtime repository* generated from it: each model keeps its
name, inputs, outputs, batching, instance groups and version policy, but runs on
`backend: "python"` through a generic shim (`_python_model.py`, copied as
`<version>/model.py`) that loads the original file with `torch.jit.load` (TorchScript) or
an onnxruntime session (ONNX); the original files are symlinked next to it.

    <runtime dir>/<name>/config.pbtxt, <runtime dir>/<name>/<version>/{model.py, model.pt -> source}

`sync_runtime_repository` is incremental (a model is rebuilt only when its source
directory changed, aside and then swapped in), so a running server can be fed new
versions; `repository_snapshot` tells when the model repository changed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import py_compile
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from graphsvc.errors import ModelRepositoryError
from graphsvc.models.repository import (
    ModelConfig,
    RepositoryModel,
    load_model,
    mc,
    model_directories,
    write_model_config,
)

LOG = logging.getLogger(__name__)

SHIM_PATH = Path(__file__).with_name("_python_model.py")
RUNTIME_MARKER = ".graphsvc-runtime"
SOURCE_STAMP = ".graphsvc-source"

TORCHSCRIPT = "torchscript"
ONNX = "onnx"
AS_IS = "as-is"


def _source_format(config: ModelConfig) -> str | None:
    platform, backend = config.platform, config.backend
    if platform == "pytorch_libtorch" or backend == "pytorch":
        return TORCHSCRIPT
    if platform == "onnxruntime_onnx" or backend == "onnxruntime":
        return ONNX
    if backend == "python" or platform == "ensemble":
        return AS_IS
    return None


def _visible_files(directory: Path) -> Iterator[tuple[str, os.stat_result]]:
    """(relative path, stat) of every file below `directory`, skipping hidden entries and
    __pycache__ (an export stages into a hidden directory before it renames it in place)."""
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            yield path.relative_to(directory).as_posix(), st


def _fingerprint(model: RepositoryModel, extra: str) -> str:
    digest = hashlib.sha256(extra.encode())
    digest.update(SHIM_PATH.read_bytes())
    for rel, st in _visible_files(model.directory):
        digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\n".encode())
    return digest.hexdigest()


def repository_snapshot(model_repository: str | os.PathLike) -> tuple:
    """Names, sizes, mtimes and inodes of every visible file: equal snapshots, unchanged repository."""
    root = Path(model_repository)
    try:
        return tuple((rel, st.st_size, st.st_mtime_ns, st.st_ino) for rel, st in _visible_files(root))
    except OSError:
        return ()


def runtime_config(model: RepositoryModel, fmt: str) -> ModelConfig:
    """The model's config rewritten for the Python-backend shim (`fmt`: TORCHSCRIPT, ONNX or AS_IS)."""
    config = ModelConfig()
    config.CopyFrom(model.config)
    config.name = model.name
    if fmt == AS_IS:
        return config
    source_platform = config.platform or config.backend
    filename = model.model_filename
    config.platform = ""
    config.backend = "python"
    config.runtime = ""
    config.default_model_filename = ""
    config.cc_model_filenames.clear()
    config.optimization.ClearField("execution_accelerators")
    if not config.HasField("optimization") or config.optimization.ByteSize() == 0:
        config.ClearField("optimization")
    for group in config.instance_group:
        if group.kind == mc.ModelInstanceGroup.KIND_GPU:
            group.kind = mc.ModelInstanceGroup.KIND_CPU  # the shim runs torch on CPU
            del group.gpus[:]
    config.parameters["graphsvc_source_format"].string_value = fmt
    config.parameters["graphsvc_source_platform"].string_value = source_platform
    config.parameters["graphsvc_model_file"].string_value = filename
    return config


def _link(source: Path, dest: Path) -> None:
    dest.symlink_to(source.resolve())


def _build_model(model: RepositoryModel, fmt: str, dest: Path) -> None:
    dest.mkdir(parents=True)
    write_model_config(dest / "config.pbtxt", runtime_config(model, fmt))
    versions = {str(v) for v in model.versions}
    for entry in sorted(model.directory.iterdir()):
        if entry.name in ("config.pbtxt", SOURCE_STAMP) or entry.name.startswith("."):
            continue
        if entry.is_dir() and entry.name.isdigit():
            if entry.name not in versions:
                continue
            if fmt == AS_IS:
                _link(entry, dest / entry.name)
                continue
            version_dir = dest / entry.name
            version_dir.mkdir()
            shutil.copy2(SHIM_PATH, version_dir / "model.py")
            # byte-compile now: a __pycache__ appearing later would look like a change to a polling server
            py_compile.compile(str(version_dir / "model.py"), doraise=True)
            for item in entry.iterdir():
                if item.name != "model.py":
                    _link(item, version_dir / item.name)
        else:
            _link(entry, dest / entry.name)  # e.g. warmup data, labels files


def check_runtime_dir(runtime_dir: Path) -> None:
    """Create `runtime_dir` (marked as ours); refuse a non-empty directory graphsvc did not make."""
    if runtime_dir.exists():
        if not runtime_dir.is_dir():
            raise ModelRepositoryError(f"runtime repository {runtime_dir} exists and is not a directory")
        if any(runtime_dir.iterdir()) and not (runtime_dir / RUNTIME_MARKER).exists():
            raise ModelRepositoryError(
                f"refusing to use {runtime_dir} as runtime repository: it is not empty and was not made by graphsvc"
            )
    runtime_dir.mkdir(parents=True, exist_ok=True)
    marker = runtime_dir / RUNTIME_MARKER
    if not marker.exists():
        marker.write_text("generated by graphsvc triton serve; rebuilt on every start\n")


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


@dataclass
class RepositorySync:
    """What one pass over the model repository did to the runtime repository."""

    served: list[str] = field(default_factory=list)  # models in the runtime repository now
    changed: list[str] = field(default_factory=list)  # built or rebuilt in this pass
    removed: list[str] = field(default_factory=list)  # gone from the model repository
    errors: dict[str, str] = field(default_factory=dict)  # model → why it was not (re)built


def sync_runtime_repository(model_repository: str | os.PathLike, runtime_dir: str | os.PathLike,
                            strict: bool = True) -> RepositorySync:
    """Bring the Python-backend runtime repository in `runtime_dir` up to date.

    Idempotent and incremental: a model whose source directory did not change (names,
    sizes, mtimes) is left untouched, a changed one is rebuilt aside and swapped in, a
    removed one is deleted — so it is safe to call again while the server runs.
    ONNX models are skipped with a warning unless onnxruntime is importable; models of
    other platforms are skipped with a warning. A model that cannot be built (bad
    config.pbtxt, no version) raises ModelRepositoryError when `strict`; otherwise it is
    reported in `errors` and whatever the runtime repository had for it stays.
    """
    source = Path(model_repository)
    runtime_dir = Path(runtime_dir)
    directories = model_directories(source)
    if source.resolve() == runtime_dir.resolve():
        raise ModelRepositoryError(f"runtime repository must differ from the model repository {source}")
    check_runtime_dir(runtime_dir)
    have_onnxruntime = importlib.util.find_spec("onnxruntime") is not None

    result = RepositorySync()
    keep = {RUNTIME_MARKER}
    for directory in directories:
        try:
            model = load_model(directory)
            fmt = _source_format(model.config)
            if fmt is None:
                LOG.warning(
                    "skipping model '%s': platform '%s' / backend '%s' cannot run on the Python backend here",
                    model.name, model.config.platform, model.config.backend,
                )
                continue
            if fmt == ONNX and not have_onnxruntime:
                LOG.warning("skipping ONNX model '%s': onnxruntime is not installed (pip install onnxruntime)",
                            model.name)
                continue
            if not model.versions and model.config.platform != "ensemble":
                raise ModelRepositoryError(
                    f"model '{model.name}' has no version directory holding {model.model_filename} "
                    f"(expected e.g. {model.directory / '1' / model.model_filename})"
                )
            if _build_if_changed(model, fmt, runtime_dir):
                result.changed.append(model.name)
            result.served.append(model.name)
            keep.add(model.name)
        except ModelRepositoryError as exc:
            if strict:
                raise
            result.errors[directory.name] = str(exc)
            if (runtime_dir / directory.name).exists():
                keep.add(directory.name)  # keep serving what was there
                result.served.append(directory.name)

    for entry in runtime_dir.iterdir():
        if entry.name not in keep:
            if not entry.name.startswith("."):
                result.removed.append(entry.name)
            _remove(entry)
    return result


def _build_if_changed(model: RepositoryModel, fmt: str, runtime_dir: Path) -> bool:
    stamp = _fingerprint(model, f"{fmt}\0{model.directory.resolve()}")
    dest = runtime_dir / model.name
    stamp_file = dest / SOURCE_STAMP
    if stamp_file.exists() and stamp_file.read_text().strip() == stamp:
        return False
    for entry in model.directory.iterdir():
        if entry.is_dir() and entry.name.isdigit() and entry.name.lstrip("0") and int(entry.name) not in model.versions:
            LOG.warning("model '%s': version %s has no %s, ignored", model.name, entry.name, model.model_filename)
    staging = runtime_dir / f".staging-{model.name}-{uuid.uuid4().hex[:8]}"
    try:
        _build_model(model, fmt, staging)
        (staging / SOURCE_STAMP).write_text(stamp + "\n")
        if dest.exists() or dest.is_symlink():
            trash = runtime_dir / f".old-{model.name}-{uuid.uuid4().hex[:8]}"
            os.rename(dest, trash)
            os.rename(staging, dest)
            _remove(trash)
        else:
            os.rename(staging, dest)
    finally:
        if staging.exists():
            _remove(staging)
    return True


def build_runtime_repository(model_repository: str | os.PathLike, runtime_dir: str | os.PathLike) -> list[str]:
    """Generate the runtime repository (see sync_runtime_repository); return the served models."""
    return sync_runtime_repository(model_repository, runtime_dir, strict=True).served
