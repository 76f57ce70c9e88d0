"""Run the real `tritonserver` (shipped by nvidia-pytriton) on our model repository.

The committed `model_repository/` is written for an NGC server (`pytorch_libtorch`
TorchScript, `onnxruntime_onnx`), but the pytriton build only has the Python backend.
So `TritonServer` first generates a *runtime repository* in a work directory: each model
keeps its name, inputs, outputs, batching, instance groups and version policy, but runs
on `backend: "python"` through a generic shim (`_python_model.py`, copied as
`<version>/model.py`) that loads the original file with `torch.jit.load` (TorchScript) or
an onnxruntime session (ONNX); the original files are symlinked next to it.

The server runs in explicit model-control mode (every model loaded at start). With
`poll_secs`, a watcher thread plays the part of `--model-control-mode=poll`: once a change
in the model repository has settled, it rebuilds the changed models' runtime directories
(aside, then swapped in) and loads them through Triton's repository API, so new versions
and changed model files are served without a restart (see `TritonServer._watch`).

Work directory layout (`runtime_dir`, or a temporary directory removed on stop):

    models/<name>/config.pbtxt, models/<name>/<version>/{model.py, model.pt -> source}
    backends/python/{libtriton_python.so, triton_python_backend_utils.py, triton_python_backend_stub}
    tritonserver.log   (unless log_path is given)

Environment of the server process (how the Python-backend stub gets our packages):
  * LD_LIBRARY_PATH starts with the running interpreter's LIBDIR (the stub must load
    *this* libpython3.x, not the system one) and nvidia_pytriton.libs;
  * PATH starts with the directory of `sys.executable`, as pytriton does: the embedded
    interpreter in the stub finds `python3` there, sees the venv's `pyvenv.cfg`, and so
    gets the venv's site-packages (torch, numpy) with .pth files processed. (The stub
    runs its interpreter with ignore_environment=1: PYTHONPATH/PYTHONHOME do nothing.)
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import importlib.util
import json
import logging
import os
import py_compile
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from graphsvc.errors import ConfigError, ModelRepositoryError, TritonUnavailable
from graphsvc.models.repository import (
    ModelConfig,
    RepositoryModel,
    load_model,
    mc,
    write_model_config,
)

LOG = logging.getLogger(__name__)


class StartupCancelled(Exception):
    """wait_ready() was asked to give up (its `cancel` event was set) before the server was ready."""


SHIM_PATH = Path(__file__).with_name("_python_model.py")
RUNTIME_MARKER = ".graphsvc-runtime"
SOURCE_STAMP = ".graphsvc-source"
LOG_TAIL_LINES = 40

_TORCHSCRIPT = "torchscript"
_ONNX = "onnx"
_AS_IS = "as-is"


# --------------------------------------------------------------------------------------
# locating the server


@dataclass(frozen=True)
class TritonDistribution:
    """Where a tritonserver installation keeps its pieces."""

    binary: Path
    python_backend: Path  # directory with libtriton_python.so
    stub: Path  # triton_python_backend_stub matching this interpreter
    libs: Path | None  # extra shared libraries (nvidia_pytriton.libs)
    caches: Path | None


def _pytriton_root() -> Path | None:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def find_tritonserver() -> Path:
    """Path of the `tritonserver` binary.

    Order: $GRAPHSVC_TRITONSERVER, the one in the nvidia-pytriton package,
    `tritonserver` on PATH, /opt/tritonserver/bin/tritonserver.
    """
    return triton_distribution().binary


def triton_distribution() -> TritonDistribution:
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    candidates: list[Path] = []
    env = os.environ.get("GRAPHSVC_TRITONSERVER")
    if env:
        path = Path(env).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ConfigError(f"GRAPHSVC_TRITONSERVER={env} is not an executable file")
        candidates.append(path)
    root = _pytriton_root()
    if root is not None:
        candidates.append(root / "tritonserver" / "bin" / "tritonserver")
    which = shutil.which("tritonserver")
    if which:
        candidates.append(Path(which))
    candidates.append(Path("/opt/tritonserver/bin/tritonserver"))

    for binary in candidates:
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            continue
        home = binary.resolve().parent.parent
        python_backend = home / "backends" / "python"
        if not (python_backend / "libtriton_python.so").is_file():
            continue
        stub = home / "python_backend_stubs" / version / "triton_python_backend_stub"  # pytriton layout
        if not stub.is_file():
            stub = python_backend / "triton_python_backend_stub"  # NGC layout
        if not stub.is_file():
            continue
        libs = home.parent.parent / "nvidia_pytriton.libs"  # site-packages/nvidia_pytriton.libs
        if not libs.is_dir():
            libs = home / "external_libs"
        caches = home / "caches"
        return TritonDistribution(
            binary=binary,
            python_backend=python_backend,
            stub=stub,
            libs=libs if libs.is_dir() else None,
            caches=caches if caches.is_dir() else None,
        )
    raise ConfigError(
        f"no tritonserver with a Python backend for Python {version} found "
        "(install nvidia-pytriton, or set GRAPHSVC_TRITONSERVER to the tritonserver binary)"
    )


def _prepare_backends(dist: TritonDistribution, backends_dir: Path) -> Path:
    """backends/python/ with the stub matching this interpreter (as pytriton does)."""
    target = backends_dir / "python"
    target.mkdir(parents=True, exist_ok=True)
    for source in dist.python_backend.iterdir():
        if source.is_file() and source.name != "triton_python_backend_stub":
            _copy_if_changed(source, target / source.name)
    _copy_if_changed(dist.stub, target / "triton_python_backend_stub")
    return backends_dir


def _copy_if_changed(source: Path, dest: Path) -> None:
    try:
        st, dt = source.stat(), dest.stat()
        if st.st_size == dt.st_size and st.st_mtime_ns == dt.st_mtime_ns:
            return
    except FileNotFoundError:
        pass
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}")
    shutil.copy2(source, tmp)
    os.replace(tmp, dest)


# --------------------------------------------------------------------------------------
# runtime repository


def _source_format(config: ModelConfig) -> str | None:
    platform, backend = config.platform, config.backend
    if platform == "pytorch_libtorch" or backend == "pytorch":
        return _TORCHSCRIPT
    if platform == "onnxruntime_onnx" or backend == "onnxruntime":
        return _ONNX
    if backend == "python" or platform == "ensemble":
        return _AS_IS
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


def _runtime_config(model: RepositoryModel, fmt: str) -> ModelConfig:
    config = ModelConfig()
    config.CopyFrom(model.config)
    config.name = model.name
    if fmt == _AS_IS:
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
    write_model_config(dest / "config.pbtxt", _runtime_config(model, fmt))
    versions = {str(v) for v in model.versions}
    for entry in sorted(model.directory.iterdir()):
        if entry.name in ("config.pbtxt", SOURCE_STAMP) or entry.name.startswith("."):
            continue
        if entry.is_dir() and entry.name.isdigit():
            if entry.name not in versions:
                continue
            if fmt == _AS_IS:
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


def _check_runtime_dir(runtime_dir: Path) -> None:
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


def _model_directories(source: Path) -> list[Path]:
    if not source.is_dir():
        raise ModelRepositoryError(f"model repository {source} does not exist or is not a directory")
    return [e for e in sorted(source.iterdir()) if e.is_dir() and not e.name.startswith(".")]


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
    directories = _model_directories(source)
    if source.resolve() == runtime_dir.resolve():
        raise ModelRepositoryError(f"runtime repository must differ from the model repository {source}")
    _check_runtime_dir(runtime_dir)
    have_onnxruntime = importlib.util.find_spec("onnxruntime") is not None

    result = RepositorySync()
    keep = {RUNTIME_MARKER}
    for directory in directories:
        try:
            if not (directory / "config.pbtxt").exists():
                raise ModelRepositoryError(f"{directory}: model directory has no config.pbtxt")
            model = load_model(directory)
            fmt = _source_format(model.config)
            if fmt is None:
                LOG.warning(
                    "skipping model '%s': platform '%s' / backend '%s' cannot run on the Python backend here",
                    model.name, model.config.platform, model.config.backend,
                )
                continue
            if fmt == _ONNX and not have_onnxruntime:
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


# --------------------------------------------------------------------------------------
# the server process


_FAILED_LOAD = re.compile(r"failed to load '([^']+)'(?: version (\d+))?: (.*)")


def _port_free(address: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True


def python_stub_processes(work_dir: str | os.PathLike) -> dict[int, str]:
    """{pid: model directory} of the Python-backend stubs running out of a server's work dir
    (one per model instance), read from /proc."""
    marker = str(Path(work_dir).resolve() / "backends" / "python" / "triton_python_backend_stub")
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(args) > 1 and args[0].decode(errors="replace") == marker:
            found[int(entry.name)] = str(Path(args[1].decode(errors="replace")).parent.parent)
    return found


def end_orphaned_stubs(work_dir: str | os.PathLike) -> list[int]:
    """End the Python-backend stubs of `work_dir` whose tritonserver is gone; their pids.
    A server killed with SIGKILL leaves them running (they ignore SIGTERM, ~700 MB here),
    each holding its model; stubs of a server still running are left alone."""
    ended = []
    for pid in python_stub_processes(work_dir):
        if _is_tritonserver(_parent_pid(pid)):
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            ended.append(pid)
    return ended


def _parent_pid(pid: int) -> int | None:
    try:  # /proc/PID/stat: "pid (comm) state ppid …", comm may hold spaces and parentheses
        return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _is_tritonserver(pid: int | None) -> bool:
    if not pid or pid == 1:
        return False
    try:
        program = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return False
    return Path(program.decode(errors="replace")).name == "tritonserver"


def _set_parent_death_signal() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001
        pass


class TritonServer:
    """A local tritonserver process serving `model_repository` (see module docstring).

        with TritonServer("model_repository", http_port=8000) as server:   # start + wait_ready
            TritonClient(server.grpc_url).infer(...)
    """

    def __init__(
        self,
        model_repository: str | os.PathLike,
        http_port: int = 8000,
        grpc_port: int = 8001,
        metrics_port: int = 8002,
        bind_address: str = "127.0.0.1",
        runtime_dir: str | os.PathLike | None = None,
        log_path: str | os.PathLike | None = None,
        extra_args: Sequence[str] = (),
        poll_secs: int | None = None,
        log_verbose: int = 0,
        stop_timeout: float = 20.0,
        load_timeout: float = 300.0,
    ):
        """poll_secs: watch `model_repository` every that many seconds and load changed
        models into the running server (None: serve what is there at start)."""
        # absolute: tritonserver runs from another working directory
        self.model_repository = Path(model_repository).resolve()
        self.http_port = int(http_port)
        self.grpc_port = int(grpc_port)
        self.metrics_port = int(metrics_port)
        self.bind_address = bind_address.strip("[]")
        self.runtime_dir = Path(runtime_dir).resolve() if runtime_dir is not None else None
        self._log_path = Path(log_path).resolve() if log_path is not None else None
        self.extra_args = list(extra_args)
        self.poll_secs = poll_secs
        self.log_verbose = log_verbose
        self.stop_timeout = stop_timeout
        self.models: list[str] = []
        self._process: subprocess.Popen | None = None
        self._work_dir: Path | None = None
        self._temp_work_dir = False
        self._log_file = None
        self.load_timeout = load_timeout
        self.load_errors: dict[str, str] = {}  # model → why its last live update failed
        self.reloads: list[tuple[str, str, bool]] = []  # (model, "load"/"unload", succeeded), in order
        self._watcher: threading.Thread | None = None
        self._stop_watch = threading.Event()
        self._snapshot_at_start: tuple = ()

    # -- addresses ----------------------------------------------------------------------

    @property
    def _connect_host(self) -> str:
        if self.bind_address in ("0.0.0.0", "", "::", "[::]"):
            return "127.0.0.1"
        host = self.bind_address.strip("[]")
        return f"[{host}]" if ":" in host else host

    @property
    def http_url(self) -> str:
        return f"http://{self._connect_host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"grpc://{self._connect_host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self._connect_host}:{self.metrics_port}/metrics"

    @property
    def log_path(self) -> Path | None:
        if self._log_path is not None:
            return self._log_path
        return self._work_dir / "tritonserver.log" if self._work_dir else None

    @property
    def work_dir(self) -> Path | None:
        """Runtime repository, backends and (by default) the log, while the server runs."""
        return self._work_dir

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- lifecycle ----------------------------------------------------------------------

    def command(self, dist: TritonDistribution, models_dir: Path, backends_dir: Path) -> list[str]:
        args = [
            str(dist.binary),
            f"--model-repository={models_dir}",
            f"--backend-directory={backends_dir}",
            f"--http-address={self.bind_address}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.bind_address}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.bind_address}",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            "--pinned-memory-pool-byte-size=0",  # CPU only: no CUDA pinned memory
            "--disable-auto-complete-config",
            "--strict-readiness=true",
            f"--exit-timeout-secs={max(1, int(self.stop_timeout / 2))}",
            f"--log-verbose={self.log_verbose}",
            # distinct shared-memory names, so several servers can run side by side
            f"--backend-config=python,shm-region-prefix-name=graphsvc_{os.getpid()}_{uuid.uuid4().hex[:8]}_",
        ]
        if dist.caches is not None:
            args.append(f"--cache-directory={dist.caches}")
        # explicit control: every model at start; later changes are loaded by our watcher (see _watch)
        args += ["--model-control-mode=explicit", "--load-model=*", "--exit-on-error=true"]
        return args + self.extra_args

    def environment(self, dist: TritonDistribution) -> dict[str, str]:
        env = dict(os.environ)
        libdirs = [sysconfig.get_config_var("LIBDIR") or ""]
        if dist.libs is not None:
            libdirs.append(str(dist.libs))
        if env.get("LD_LIBRARY_PATH"):
            libdirs.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in libdirs if p)
        bindir = Path(sys.executable).parent
        if not (bindir / "python3").exists():
            LOG.warning("%s has no python3: the Python-backend stub may not find this environment's packages", bindir)
        env["PATH"] = os.pathsep.join([str(bindir), env.get("PATH", "")])
        env.pop("PYTHONHOME", None)
        return env

    def start(self) -> "TritonServer":
        """Build the runtime repository and launch tritonserver (returns without waiting)."""
        if self.is_running():
            raise RuntimeError(f"tritonserver already running (pid {self._process.pid})")
        dist = triton_distribution()
        for name, port in (("HTTP", self.http_port), ("gRPC", self.grpc_port), ("metrics", self.metrics_port)):
            if not _port_free(self.bind_address, port):
                raise ConfigError(f"{name} port {port} on {self.bind_address} is already in use — pick another port")
        if self.runtime_dir is None:
            self._work_dir = Path(tempfile.mkdtemp(prefix="graphsvc-triton-"))
            self._temp_work_dir = True
        else:
            self._work_dir = self.runtime_dir
            _check_runtime_dir(self._work_dir)
            ended = end_orphaned_stubs(self._work_dir)
            if ended:
                LOG.warning("ended %d Python-backend stub(s) a killed tritonserver left running in %s: pids %s",
                            len(ended), self._work_dir, ", ".join(map(str, ended)))
        models_dir = self._work_dir / "models"
        try:
            self._snapshot_at_start = repository_snapshot(self.model_repository)
            self.models = build_runtime_repository(self.model_repository, models_dir)
            backends_dir = _prepare_backends(dist, self._work_dir / "backends")
            cmd = self.command(dist, models_dir, backends_dir)
            log_path = self.log_path
            log_path.parent.mkdir(parents=True, exist_ok=True)
            # our own log (in the work dir) starts fresh; a log file the caller names is appended to
            self._log_file = open(log_path, "wb" if self._log_path is None else "ab")
            self._log_offset = self._log_file.tell()
            self._log_file.write(f"# graphsvc: {' '.join(cmd)}\n".encode())
            self._log_file.flush()
            LOG.info("starting %s", " ".join(cmd))
            self._started_at = time.monotonic()
            self._process = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                env=self.environment(dist),
                cwd=self._work_dir,
                start_new_session=True,
                preexec_fn=_set_parent_death_signal,
            )
        except BaseException:
            self._cleanup()
            raise
        if self.poll_secs:
            self._stop_watch.clear()
            self._watcher = threading.Thread(target=self._watch, name="graphsvc-triton-repo-watch", daemon=True)
            self._watcher.start()
        return self

    def _watch(self) -> None:
        """Live model updates: poll the model repository; once a change has settled (the same
        snapshot on two polls in a row, so a model still being copied is not loaded half
        written), rebuild the changed models' runtime directories and ask Triton to load
        them (and to unload removed ones) through its repository API. A model that fails to
        load keeps serving its previous versions; the failure is logged and kept in
        `load_errors`."""
        models_dir = self._work_dir / "models"
        applied = self._snapshot_at_start
        pending = None
        reported: dict[str, str] = {}
        while not self._stop_watch.wait(float(self.poll_secs or 1)):
            snapshot = repository_snapshot(self.model_repository)
            if snapshot == applied:
                pending = None
                continue
            if snapshot != pending:
                pending = snapshot  # changed since the last poll: let it settle
                continue
            try:
                sync = sync_runtime_repository(self.model_repository, models_dir, strict=False)
            except Exception as exc:  # noqa: BLE001 — keep serving what is there
                LOG.warning("model repository %s: %s", self.model_repository, exc)
                applied = snapshot
                continue
            applied = snapshot
            self.models = sync.served
            for name, message in sync.errors.items():
                if reported.get(name) != message:  # say it once, not every poll
                    LOG.warning("model '%s' not updated: %s", name, message)
                    reported[name] = message
                self.load_errors[name] = message
            for name in sync.changed:
                reported.pop(name, None)
                self._repository_call(name, "load")
            for name in sync.removed:
                self._repository_call(name, "unload")

    def _repository_call(self, name: str, action: str) -> bool:
        """POST /v2/repository/models/<name>/{load,unload}; False (and logged) when Triton refuses."""
        url = f"{self.http_url}/v2/repository/models/{urllib.parse.quote(name)}/{action}"
        request = urllib.request.Request(url, data=b"{}", method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.load_timeout) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            body = exc.read().decode("utf-8", errors="replace")
            try:
                message = json.loads(body).get("error", body)
            except ValueError:
                message = body
            LOG.warning("Triton could not %s model '%s': %s", action, name, message)
            self.load_errors[name] = message
            self.reloads.append((name, action, False))
            return False
        except (urllib.error.URLError, OSError) as exc:
            LOG.warning("Triton could not %s model '%s': %s", action, name, exc)
            self.load_errors[name] = str(exc)
            self.reloads.append((name, action, False))
            return False
        LOG.info("model '%s': %sed", name, action)
        self.load_errors.pop(name, None)
        self.reloads.append((name, action, True))
        return True

    def log_tail(self, lines: int = LOG_TAIL_LINES, width: int = 500) -> str:
        """The last lines this server wrote to its log, without the wide status tables."""
        path = self.log_path
        if path is None or not path.exists():
            return ""
        tail: deque = deque(maxlen=lines)
        with open(path, "rb") as handle:
            handle.seek(getattr(self, "_log_offset", 0))
            for raw in handle:
                line = raw.decode("utf-8", errors="replace").rstrip()
                if not line or line.startswith(("|", "+", "# graphsvc:")) or line.endswith("] "):
                    continue
                if re.match(r"^[IWE]\d{4} .*\] $", line + " "):
                    continue  # header line of a table that was dropped
                tail.append(line if len(line) <= width else line[:width] + "…")
        return "\n".join(tail)

    def _load_failures(self) -> list[tuple[str, str]]:
        path = self.log_path
        if path is None or not path.exists():
            return []
        with open(path, "rb") as handle:
            handle.seek(getattr(self, "_log_offset", 0))
            text = handle.read().decode("utf-8", errors="replace")
        failures = []
        for match in _FAILED_LOAD.finditer(text):
            reason = match.group(3).strip().rstrip('"').replace("\\n", " ").strip()
            failures.append((match.group(1), reason))
        return failures

    def _startup_error(self, summary: str) -> Exception:
        tail = self.log_tail()
        where = "" if (self._temp_work_dir and self._log_path is None) else f" ({self.log_path})"
        detail = f"\n--- tritonserver log{where} ---\n{tail}" if tail else ""
        failures = self._load_failures()
        if failures:
            names = ", ".join(dict.fromkeys(f"'{name}'" for name, _ in failures))
            first = failures[0][1]
            if len(first) > 300:
                first = first[:300] + "…"
            return ModelRepositoryError(f"model {names} failed to load: {first}{detail}")
        return TritonUnavailable(self.http_url, f"{summary}{detail}")

    def _http_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def wait_ready(self, timeout: float = 120.0, cancel: threading.Event | None = None) -> "TritonServer":
        """Block until the server and all its models are ready (StartupCancelled once `cancel` is set).

        Raises ModelRepositoryError (a model failed to load) or TritonUnavailable (the
        process died or the timeout passed), both with the server's log tail.
        """
        if self._process is None:
            raise TritonUnavailable(self.http_url, "server not started")
        deadline = time.monotonic() + timeout
        while True:
            code = self._process.poll()
            if code is not None:
                error = self._startup_error(f"tritonserver exited with code {code}")
                self.stop()
                raise error
            if self._http_ready():
                self.ready_after = time.monotonic() - self._started_at
                LOG.info("tritonserver ready after %.1fs", self.ready_after)
                return self
            if self.poll_secs and self._load_failures():
                raise self._startup_error("a model failed to load")
            if time.monotonic() >= deadline:
                raise self._startup_error(f"not ready after {timeout:g}s")
            if cancel is None:
                time.sleep(0.1)
            elif cancel.wait(0.1):
                raise StartupCancelled()

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM, then SIGKILL (whole process group) after `timeout`; returns the exit code."""
        timeout = self.stop_timeout if timeout is None else timeout
        self._stop_watch.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
            self._watcher = None
        code = None
        process = self._process
        if process is not None:
            if process.poll() is None:
                try:
                    process.send_signal(signal.SIGTERM)
                    code = process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    LOG.warning("tritonserver did not stop within %gs, killing it", timeout)
                    try:
                        os.killpg(process.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    try:
                        code = process.wait(timeout=10)
                    except subprocess.TimeoutExpired:  # never hang a shutdown on a process we cannot reap
                        LOG.error("tritonserver (pid %d) still not gone 10s after SIGKILL", process.pid)
            else:
                code = process.returncode
            # python-backend stubs live in the server's process group; make sure none linger
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._cleanup()
        return code

    def _cleanup(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._process is not None and self._process.poll() is None:
            return
        self._process = None
        if self._temp_work_dir and self._work_dir is not None:
            shutil.rmtree(self._work_dir, ignore_errors=True)  # a given log_path lives elsewhere
            self._work_dir = None
            self._temp_work_dir = False

    def __enter__(self) -> "TritonServer":
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self._process.pid}" if self.is_running() else "stopped"
        return f"TritonServer({self.model_repository}, {self.http_url}, {self.grpc_url}, {state})"
