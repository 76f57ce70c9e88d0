"""Run the real `tritonserver` (shipped by nvidia-pytriton) on our model repository.

`TritonServer` finds the binary (`graphsvc.triton.binary`), generates the runtime
repository in a work directory (`graphsvc.triton.runtime_repository`), starts the process
on the given ports and waits until the server and its models are ready, with the server's
log tail in the error when they are not; `stop` ends it and its Python-backend stubs.

The server runs in explicit model-control mode (every model loaded at start). With
`poll_secs`, a watcher thread plays the part of `--model-control-mode=poll`: once a change
in the model repository has settled, it rebuilds the changed models' runtime directories
(aside, then swapped in) and loads them through Triton's repository API, so new versions
and changed model files are served without a restart (see `TritonServer._watch`).

Work directory layout (`runtime_dir`, or a temporary directory removed on stop):

    models/<name>/config.pbtxt, models/<name>/<version>/{model.py, model.pt -> source}
    backends/python/{libtriton_python.so, triton_python_backend_utils.py, triton_python_backend_stub}
    tritonserver.log   (unless log_path is given)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import deque
from pathlib import Path
from typing import Sequence

from graphsvc.errors import ConfigError, ModelRepositoryError, TritonUnavailable
from graphsvc.triton.binary import TritonDistribution, prepare_backends, server_environment, triton_distribution
from graphsvc.triton.python_stubs import end_orphaned_stubs
from graphsvc.triton.runtime_repository import (
    build_runtime_repository,
    check_runtime_dir,
    repository_snapshot,
    sync_runtime_repository,
)

LOG = logging.getLogger(__name__)

LOG_TAIL_LINES = 40


class StartupCancelled(Exception):
    """wait_ready() was asked to give up (its `cancel` event was set) before the server was ready."""


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


def _set_parent_death_signal() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: the stdlib has no prctl
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
            check_runtime_dir(self._work_dir)
            ended = end_orphaned_stubs(self._work_dir)
            if ended:
                LOG.warning("ended %d Python-backend stub(s) a killed tritonserver left running in %s: pids %s",
                            len(ended), self._work_dir, ", ".join(map(str, ended)))
        models_dir = self._work_dir / "models"
        try:
            self._snapshot_at_start = repository_snapshot(self.model_repository)
            self.models = build_runtime_repository(self.model_repository, models_dir)
            backends_dir = prepare_backends(dist, self._work_dir / "backends")
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
                env=server_environment(dist),
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
