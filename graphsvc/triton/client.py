"""The one Triton client of graphsvc (KServe v2 over gRPC or HTTP, binary tensors).

    client = TritonClient("grpc://localhost:8001")      # or http://host:8000, or host:port (= gRPC)
    out = client.infer("model", {"x__0": x, "y__1": y})  # {"output name": np.ndarray}
    for out in client.infer_many("model", batches, max_in_flight=4): ...

Errors: a server that cannot be reached (down, restarting, connection reset mid-request)
is retried with exponential backoff (`RetryPolicy`: bounded, from GRAPHSVC_TRITON_RETRIES,
GRAPHSVC_TRITON_BACKOFF, GRAPHSVC_TRITON_MAX_BACKOFF or the constructor), each retry on a
fresh connection; when the retries are used up, TritonUnavailable names the URL and how
long it tried. A request the server rejects raises TritonInferenceError naming the model
(not retried: sending it again gives the same answer).

Large requests to a server on this machine (a loopback gRPC URL) go through system shared
memory (`graphsvc.triton.shm`) unless GRAPHSVC_TRITON_SHM=off: the tensors are written
into a /dev/shm region instead of being serialised into the request.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence
from urllib.parse import urlsplit

import numpy as np
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from graphsvc.config import DEFAULT_TRITON_URL as DEFAULT_URL
from graphsvc.errors import ConfigError, TritonInferenceError, TritonUnavailable
from graphsvc.triton.shm import RegionUnavailable, SharedMemoryChannel, remove_stale_regions

LOG = logging.getLogger(__name__)

_DEFAULT_PORTS = {"grpc": 8001, "http": 8000, "https": 443}

# gRPC status codes that mean "could not talk to the server" rather than "the server said no"
_GRPC_CONNECTION_STATUSES = {"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.CANCELLED"}
_CONNECTION_HINTS = (
    "failed to connect", "connection refused", "dns resolution", "socket closed", "connection reset",
    "deadline exceeded", "connect failed", "unreachable", "broken pipe", "end of tcp stream",
    "errors resolving", "lookup failed", "name resolution",
)
# ... but Triton itself answers UNAVAILABLE for models that are not ready
_SERVER_SIDE_HINTS = ("model", "request for unknown", "not ready", "not found")
# what a server says about a model while it starts, reloads or shuts down: worth a retry
_TRANSIENT_MODEL_HINTS = ("has no available versions", "is not ready", "not at ready state", "shutting down",
                          "is unloading", "being unloaded", "server is stopping",
                          "stopped accepting new inference requests")
# requests whose inputs reach this many bytes go through shared memory (when it is on)
SHM_MIN_BYTES = 256 * 1024
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


class _NoSharedMemory(Exception):
    """Shared memory cannot be used: no room in /dev/shm, or the server would not take our
    regions (e.g. it cannot see this machine's /dev/shm)."""


def shared_memory_wanted(protocol: str, address: str, environ: Mapping[str, str] | None = None) -> bool:
    """GRAPHSVC_TRITON_SHM: auto (default: gRPC to a loopback address), on (gRPC to any
    address: the server must share this machine's /dev/shm), off."""
    mode = (os.environ if environ is None else environ).get("GRAPHSVC_TRITON_SHM", "auto").strip().lower()
    if mode not in ("auto", "on", "off"):
        raise ConfigError(f"GRAPHSVC_TRITON_SHM must be auto, on or off, not '{mode}'")
    if mode == "off" or protocol != "grpc":
        return False
    return mode == "on" or address.rsplit(":", 1)[0] in _LOOPBACK


@dataclass(frozen=True)
class RetryPolicy:
    """How long a client keeps trying a server it cannot reach.

    Attempt n (n = 1 … retries) waits backoff · 2^(n-1) seconds, at most max_backoff, with
    ±10 % jitter so that many requests in flight do not reconnect in lock-step. The
    defaults (8 retries, 0.5 s doubling to 8 s: about 40 s in all) outlast a restart of
    `graphsvc triton serve` with the sample models; a server that stays down fails the
    job within a minute.
    """

    retries: int = 8
    backoff: float = 0.5
    max_backoff: float = 8.0

    def __post_init__(self):
        if self.retries < 0 or self.backoff < 0 or self.max_backoff < 0:
            raise ConfigError(f"Triton retry settings must not be negative: {self}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number `attempt` (1-based)."""
        base = min(self.max_backoff, self.backoff * (2 ** (attempt - 1)))
        return base * random.uniform(0.9, 1.1)

    @property
    def budget(self) -> float:
        """Longest total wait (without jitter) before giving up."""
        return sum(min(self.max_backoff, self.backoff * 2**i) for i in range(self.retries))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "RetryPolicy":
        env = os.environ if environ is None else environ
        values = {}
        for field_name, variable, kind in (
            ("retries", "GRAPHSVC_TRITON_RETRIES", int),
            ("backoff", "GRAPHSVC_TRITON_BACKOFF", float),
            ("max_backoff", "GRAPHSVC_TRITON_MAX_BACKOFF", float),
        ):
            text = env.get(variable, "").strip()
            if not text:
                continue
            try:
                values[field_name] = kind(text)
            except ValueError:
                raise ConfigError(f"{variable}={text!r} is not a valid {kind.__name__}") from None
        return cls(**values)


@dataclass(frozen=True)
class ModelStatus:
    name: str
    version: str
    state: str  # READY, LOADING, UNLOADING, UNAVAILABLE, or "" (known but never loaded)
    reason: str

    @property
    def ready(self) -> bool:
        return self.state == "READY"


def parse_url(url: str) -> tuple[str, str]:
    """`grpc://h:p` / `http://h:p` / `https://h:p` / `h:p` → (protocol, "host:port")."""
    text = (url or "").strip()
    if not text:
        raise ConfigError("empty Triton URL")
    if "://" not in text:
        text = "grpc://" + text
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ConfigError(f"Triton URL {url!r}: scheme must be grpc://, http:// or https://")
    if not parts.hostname:
        raise ConfigError(f"Triton URL {url!r} has no host")
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        raise ConfigError(f"Triton URL {url!r} has an invalid port") from None
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    return scheme, f"{host}:{port}"


def _is_connection_error(exc: BaseException) -> bool:
    if isinstance(exc, InferenceServerException):
        status = str(exc.status() or "")
        if status in _GRPC_CONNECTION_STATUSES:
            message = (exc.message() or "").lower()
            if any(hint in message for hint in _CONNECTION_HINTS):
                return True
            return not any(hint in message for hint in _SERVER_SIDE_HINTS)
        return False
    return isinstance(exc, (OSError, TimeoutError, ConnectionError))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, InferenceServerException):
        message = exc.message() or str(exc)
        return message.strip()
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _as_array(value: Any) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind == "U":  # unicode → BYTES (utf-8)
        array = np.vectorize(lambda s: s.encode("utf-8"), otypes=[np.object_])(array)
    elif array.dtype.kind == "S":
        array = array.astype(np.object_)
    return np.ascontiguousarray(array)


class _Connection:
    """One tritonclient connection, made on first use and replaced after a connection error.

    A gRPC channel that lost its server backs off on its own (up to minutes) before it
    tries again; a fresh channel per retry connects as soon as the server is back.
    """

    def __init__(self, factory: Callable[[], Any]):
        self._factory = factory
        self._client = None
        self.shm: SharedMemoryChannel | None = None  # made on the first large request

    def get(self):
        if self._client is None:
            self._client = self._factory()
        return self._client

    def reset(self) -> None:
        """Drop the client (the shared-memory regions stay, registered again on the next one)."""
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001
                pass

    def close(self) -> None:
        """Unregister and free the shared-memory regions, then drop the client."""
        if self.shm is not None:
            self.shm.close(self._client)
            self.shm = None
        self.reset()


class TritonClient:
    """Client for one Triton server; safe to share between threads (one connection per thread)."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        retries: int | None = None,
        backoff: float | None = None,
        max_backoff: float | None = None,
        timeout: float = 60.0,
        verbose: bool = False,
        shared_memory: bool | None = None,
    ):
        """retries/backoff/max_backoff override the RetryPolicy from the environment;
        shared_memory overrides GRAPHSVC_TRITON_SHM (see `shared_memory_wanted`)."""
        self.protocol, self.address = parse_url(url)
        self.url = f"{self.protocol}://{self.address}"
        policy = RetryPolicy.from_env()
        self.retry_policy = RetryPolicy(
            retries=policy.retries if retries is None else int(retries),
            backoff=policy.backoff if backoff is None else float(backoff),
            max_backoff=policy.max_backoff if max_backoff is None else float(max_backoff),
        )
        self.timeout = float(timeout)
        self.verbose = verbose
        self._local = threading.local()
        self._connections: list[_Connection] = []
        self._lock = threading.Lock()
        self._closed_count = 0  # close() increments it: requests waiting to retry give up
        self._output_names: dict[tuple[str, str], list[str]] = {}
        self.shared_memory = (shared_memory_wanted(self.protocol, self.address) if shared_memory is None
                              else bool(shared_memory) and self.protocol == "grpc")
        self.shm_requests = 0  # requests sent through shared memory (figures, tests)
        self._output_specs_cache: dict[tuple[str, str], list[tuple[str, str, list[int]]] | None] = {}

    @property
    def retries(self) -> int:
        return self.retry_policy.retries

    # -- connections --------------------------------------------------------------------

    @property
    def _http(self) -> bool:
        return self.protocol in ("http", "https")

    def _new_client(self):
        if self._http:
            import tritonclient.http as httpclient

            return httpclient.InferenceServerClient(
                self.address,
                ssl=self.protocol == "https",
                connection_timeout=min(self.timeout, 10.0),
                network_timeout=self.timeout,
                verbose=self.verbose,
            )
        import tritonclient.grpc as grpcclient

        return grpcclient.InferenceServerClient(self.address, verbose=self.verbose)

    def _connection(self) -> _Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = _Connection(self._new_client)
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    def _client(self):
        return self._connection().get()

    def close(self) -> None:
        with self._lock:
            self._closed_count += 1
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()
        self._local = threading.local()

    def __enter__(self) -> "TritonClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TritonClient({self.url!r})"

    # -- error handling -----------------------------------------------------------------

    def _error(self, exc: BaseException, *, model: str | None = None, what: str = "") -> Exception | None:
        """The graphsvc error for a client exception (None: not a Triton/connection error)."""
        if _is_connection_error(exc):
            error = TritonUnavailable(self.url, _describe(exc))
            error.detail = _describe(exc)
            return error
        if isinstance(exc, InferenceServerException):
            subject = f"model '{model}'" if model else (what or "request")
            return TritonInferenceError(f"Triton at {self.url}: {subject}: {_describe(exc)}")
        return None

    def _interrupted_wait(self, seconds: float, cancel: threading.Event | None) -> bool:
        """Sleep; True (within 0.1 s) when the client is closed or `cancel` is set meanwhile."""
        closed_count = self._closed_count
        deadline = time.monotonic() + seconds
        while True:
            if self._closed_count != closed_count or (cancel is not None and cancel.is_set()):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if cancel is not None:
                cancel.wait(min(remaining, 0.1))
            else:
                time.sleep(min(remaining, 0.1))

    def _call(self, fn: Callable[[Any], Any], *, model: str | None = None, what: str = "", retry: bool = True,
              connection: _Connection | None = None, cancel: threading.Event | None = None):
        """fn(client): connection errors retried with exponential backoff on a fresh connection
        (RetryPolicy), then TritonUnavailable; server errors mapped to TritonInferenceError."""
        connection = connection if connection is not None else self._connection()
        policy = self.retry_policy
        attempt = 0
        started = time.monotonic()
        while True:
            try:
                return fn(connection.get())
            except Exception as exc:  # noqa: BLE001 — mapped below
                error = self._error(exc, model=model, what=what)
                if error is None:
                    raise
                transient = not isinstance(error, TritonUnavailable) and any(
                    hint in str(error).lower() for hint in _TRANSIENT_MODEL_HINTS)
                if not isinstance(error, TritonUnavailable) and not transient:
                    raise error from None
                if not transient:
                    connection.reset()
                if retry and attempt < policy.retries:
                    attempt += 1
                    delay = policy.delay(attempt)
                    LOG.warning("Triton at %s: %s; retry %d/%d in %.1fs", self.url, _describe(exc), attempt,
                                policy.retries, delay)
                    if self._interrupted_wait(delay, cancel):
                        error.attempts = attempt  # the retry that was due is not made
                        raise error from None
                    continue
                if retry and attempt:
                    detail = (f"{_describe(exc)}; gave up after {attempt + 1} attempts over "
                              f"{time.monotonic() - started:.1f}s")
                    if transient:
                        error = TritonInferenceError(f"{error}; gave up after {attempt + 1} attempts over "
                                                     f"{time.monotonic() - started:.1f}s")
                    else:
                        error = TritonUnavailable(self.url, detail)
                        error.detail = detail
                error.attempts = attempt + 1
                raise error from None

    # -- health and metadata ------------------------------------------------------------

    def is_ready(self) -> bool:
        """Server ready (with strict readiness: all loaded models ready). Never raises for a down server."""
        try:
            return bool(self._call(lambda c: c.is_server_ready(), retry=False))
        except TritonUnavailable:
            return False

    def model_ready(self, name: str, version: str = "") -> bool:
        try:
            return bool(self._call(lambda c: c.is_model_ready(name, version), model=name, retry=False))
        except TritonInferenceError:
            return False

    def models(self) -> list[ModelStatus]:
        """The repository index: every model the server knows, with its state."""
        index = self._call(lambda c: c.get_model_repository_index(), what="repository index")
        statuses = []
        if self._http:
            for entry in index or []:
                statuses.append(
                    ModelStatus(
                        name=entry.get("name", ""),
                        version=str(entry.get("version", "")),
                        state=entry.get("state", ""),
                        reason=entry.get("reason", ""),
                    )
                )
        else:
            for entry in index.models:
                statuses.append(ModelStatus(entry.name, entry.version, entry.state, entry.reason))
        return statuses

    def model_config(self, name: str, version: str = "") -> mc.ModelConfig:
        """The model's configuration as the server sees it, as a `ModelConfig` message."""
        response = self._call(lambda c: c.get_model_config(name, version), model=name)
        if self._http:
            config = mc.ModelConfig()
            json_format.ParseDict(response, config, ignore_unknown_fields=True)
            return config
        config = mc.ModelConfig()
        config.CopyFrom(response.config)
        return config

    def model_metadata(self, name: str, version: str = "") -> dict:
        """{"name", "versions", "inputs": [{"name", "datatype", "shape"}], "outputs": [...]}."""
        response = self._call(lambda c: c.get_model_metadata(name, version), model=name)
        if self._http:
            return response
        return json_format.MessageToDict(response, preserving_proto_field_name=True)

    def inference_statistics(self, name: str, version: str = "") -> dict[str, int]:
        """{"inference_count", "execution_count", "success_count"} summed over the model's
        versions: with dynamic batching, several requests run in one execution."""
        response = self._call(lambda c: c.get_inference_statistics(name, version), model=name)
        if not self._http:
            response = json_format.MessageToDict(response, preserving_proto_field_name=True)
        totals = {"inference_count": 0, "execution_count": 0, "success_count": 0}
        for entry in response.get("model_stats", []):
            totals["inference_count"] += int(entry.get("inference_count", 0))
            totals["execution_count"] += int(entry.get("execution_count", 0))
            totals["success_count"] += int(entry.get("inference_stats", {}).get("success", {}).get("count", 0))
        return totals

    def latest_version(self, name: str) -> str:
        """The newest version of `name` the server serves (what a job records in its manifest)."""
        versions = self.model_metadata(name).get("versions") or ["1"]
        return str(max(versions, key=int))

    def wait_ready(self, timeout: float = 120.0, models: Sequence[str] | None = None,
                   interval: float = 0.5) -> list[ModelStatus]:
        """Wait until the server is ready and so are `models` (default: every model it loads).

        Raises TritonUnavailable saying what was still missing when `timeout` passes.
        """
        deadline = time.monotonic() + timeout
        while True:
            missing = "server not reachable"
            try:
                if self._call(lambda c: c.is_server_ready(), retry=False):
                    statuses = self.models()
                    if models:
                        by_name = {s.name: s for s in statuses}
                        pending = [
                            by_name.get(name, ModelStatus(name, "", "UNKNOWN", "not in the repository"))
                            for name in models
                            if not self.model_ready(name)
                        ]
                    else:
                        pending = [
                            s for s in statuses
                            if s.state and s.state != "READY"
                            and not (s.state == "UNAVAILABLE" and s.reason == "unloaded")
                        ]
                    if not pending:
                        return statuses
                    missing = "models not ready: " + ", ".join(
                        f"{s.name} ({s.state or 'not loaded'}{': ' + s.reason if s.reason else ''})" for s in pending
                    )
                else:
                    missing = "server not ready (models still loading or failed)"
            except TritonUnavailable as exc:
                missing = f"server not reachable: {getattr(exc, 'detail', exc)}"
            except TritonInferenceError as exc:
                missing = str(exc)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TritonUnavailable(self.url, f"not ready after {timeout:g}s; {missing}")
            time.sleep(min(interval, remaining))

    # -- inference ----------------------------------------------------------------------

    def _outputs_of(self, connection: _Connection, model: str, version: str) -> list[str]:
        key = (model, version)
        names = self._output_names.get(key)
        if names is None:
            meta = self._call(lambda c: c.get_model_metadata(model, version), model=model, connection=connection)
            names = [o["name"] for o in meta["outputs"]]
            self._output_names[key] = names
        return names

    def _request(self, connection: _Connection, model: str, inputs: Mapping[str, np.ndarray],
                 outputs: Sequence[str] | None, version: str) -> tuple[list, list | None]:
        """(InferInput list, InferRequestedOutput list or None) for one request."""
        if self._http:
            import tritonclient.http as mod
        else:
            import tritonclient.grpc as mod
        infer_inputs = []
        for name, array in inputs.items():  # already arrays (_as_array in _infer_with)
            datatype = np_to_triton_dtype(array.dtype)
            if datatype is None:
                raise TritonInferenceError(f"model '{model}': input '{name}' has unsupported dtype {array.dtype}")
            item = mod.InferInput(name, list(array.shape), datatype)
            if self._http:
                item.set_data_from_numpy(array, binary_data=True)
            else:
                item.set_data_from_numpy(array)
            infer_inputs.append(item)
        if self._http:
            # without explicit binary outputs the HTTP answer would be JSON
            names = list(outputs) if outputs is not None else self._outputs_of(connection, model, version)
            return infer_inputs, [mod.InferRequestedOutput(n, binary_data=True) for n in names]
        return infer_inputs, [mod.InferRequestedOutput(n) for n in outputs] if outputs is not None else None

    def _decode(self, result, outputs: Sequence[str] | None) -> dict[str, np.ndarray]:
        if outputs is not None:
            names = list(outputs)
        elif self._http:
            names = [o["name"] for o in result.get_response().get("outputs", [])]
        else:
            names = [o.name for o in result.get_response().outputs]
        return {name: result.as_numpy(name) for name in names}

    def _infer_with(self, connection: _Connection, model: str, inputs: Mapping[str, Any],
                    outputs: Sequence[str] | None, version: str = "",
                    cancel: threading.Event | None = None) -> dict[str, np.ndarray]:
        arrays = {name: _as_array(value) for name, value in inputs.items()}
        if self.shared_memory and sum(a.nbytes for a in arrays.values()) >= SHM_MIN_BYTES \
                and all(a.dtype.kind in "biuf" for a in arrays.values()):
            try:
                result = self._call(lambda c: self._infer_shared(c, connection, model, arrays, outputs, version),
                                    model=model, connection=connection, cancel=cancel)
                with self._lock:
                    self.shm_requests += 1
                return result
            except _NoSharedMemory as exc:
                LOG.warning("shared memory with Triton at %s is not possible (%s); sending tensors in requests",
                            self.url, exc)
                self.shared_memory = False
        infer_inputs, requested = self._request(connection, model, arrays, outputs, version)
        if self._http:
            call = lambda c: c.infer(model, infer_inputs, model_version=version, outputs=requested)  # noqa: E731
        else:
            call = lambda c: c.infer(model, infer_inputs, model_version=version, outputs=requested,  # noqa: E731
                                     client_timeout=self.timeout)
        return self._decode(self._call(call, model=model, connection=connection, cancel=cancel), outputs)

    def _output_specs(self, client, model: str, version: str) -> list[tuple[str, str, list[int]]] | None:
        """(name, datatype, shape) of a batching model's outputs; None for a model without a
        batch dimension (a leading -1 there is not the request's batch size)."""
        key = (model, version)
        if key not in self._output_specs_cache:
            config = client.get_model_config(model, version, as_json=True)["config"]
            meta = client.get_model_metadata(model, version, as_json=True)
            self._output_specs_cache[key] = (
                [(o["name"], o["datatype"], [int(d) for d in o["shape"]]) for o in meta["outputs"]]
                if int(config.get("max_batch_size", 0) or 0) > 0 else None)
        return self._output_specs_cache[key]

    def _region(self, channel: SharedMemoryChannel, client, role: str, nbytes: int):
        try:
            return channel.region(client, role, nbytes)
        except RegionUnavailable as exc:  # this machine's side: no point in retrying
            raise _NoSharedMemory(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 — a connection error is retried by _call
            if _is_connection_error(exc):
                raise
            raise _NoSharedMemory(_describe(exc)) from None

    def _infer_shared(self, client, connection: _Connection, model: str, arrays: dict[str, np.ndarray],
                      outputs: Sequence[str] | None, version: str) -> dict[str, np.ndarray]:
        """One request with its inputs (and, for a batching model, its outputs) in shared memory."""
        if connection.shm is None:
            remove_stale_regions()
            connection.shm = SharedMemoryChannel()
        try:
            return self._infer_shared_once(client, connection.shm, model, arrays, outputs, version)
        except InferenceServerException as exc:
            if "shared memory region" not in str(exc):
                raise
            # a server restarted behind the same connection has forgotten our regions
            connection.shm.forget_registrations()
            return self._infer_shared_once(client, connection.shm, model, arrays, outputs, version)

    def _infer_shared_once(self, client, channel: SharedMemoryChannel, model: str, arrays: dict[str, np.ndarray],
                           outputs: Sequence[str] | None, version: str) -> dict[str, np.ndarray]:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import triton_to_np_dtype

        region = self._region(channel, client, "input", sum(a.nbytes for a in arrays.values()))
        infer_inputs = []
        for (name, array), offset in zip(arrays.items(), channel.write(region, list(arrays.values()))):
            item = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            item.set_shared_memory(region.name, array.nbytes, offset=offset)
            infer_inputs.append(item)
        specs = self._output_specs(client, model, version)
        batch = next((a.shape[0] for a in arrays.values() if a.ndim), None)
        placed: dict[str, tuple[int, int]] = {}  # output name -> (offset, bytes)
        requested = []
        if specs is not None and batch is not None:
            wanted = [spec for spec in specs if outputs is None or spec[0] in outputs]
            end = 0
            for name, datatype, shape in wanted:
                dims = [batch] + shape[1:]
                dtype = triton_to_np_dtype(datatype)
                if datatype == "BYTES" or dtype is None or any(d < 0 for d in dims):
                    continue
                placed[name] = (end, int(np.prod(dims)) * np.dtype(dtype).itemsize)
                end += placed[name][1]
            out_region = self._region(channel, client, "output", end) if placed else None
            for name, _, _ in wanted:
                item = grpcclient.InferRequestedOutput(name)
                if name in placed:
                    item.set_shared_memory(out_region.name, placed[name][1], offset=placed[name][0])
                requested.append(item)
        else:
            requested = [grpcclient.InferRequestedOutput(n) for n in outputs] if outputs is not None else None
        result = client.infer(model, infer_inputs, model_version=version, outputs=requested,
                              client_timeout=self.timeout)
        names = list(outputs) if outputs is not None else [o.name for o in result.get_response().outputs]
        decoded = {}
        for name in names:
            if name in placed:
                tensor = result.get_output(name)
                decoded[name] = channel.read(out_region, triton_to_np_dtype(tensor.datatype), list(tensor.shape),
                                             placed[name][0])
            else:
                decoded[name] = result.as_numpy(name)
        return decoded

    def infer(self, model: str, inputs: Mapping[str, Any], outputs: Sequence[str] | None = None,
              version: str = "") -> dict[str, np.ndarray]:
        """Run one request; returns {output name: array} (all outputs unless `outputs` names some)."""
        return self._infer_with(self._connection(), model, inputs, outputs, version)

    def infer_many(self, model: str, requests: Iterable[Mapping[str, Any]], outputs: Sequence[str] | None = None,
                   max_in_flight: int = 4, version: str = "") -> Iterator[dict[str, np.ndarray]]:
        """Run many requests with up to `max_in_flight` concurrently; yields results in request order.

        `requests` is consumed lazily, so it may be a generator over a large data set. Each
        pool thread owns its connection (the HTTP client is gevent-based: a connection
        must stay on the thread that made it; its async_infer is ~10 ms per request).
        A request that meets a down or restarting server is retried on its own (see
        RetryPolicy). The first failing request raises (in order); the remaining ones are
        dropped and requests waiting to retry give up.
        """
        if max_in_flight <= 1:
            for inputs in requests:
                yield self.infer(model, inputs, outputs, version)
            return

        cancel = threading.Event()
        local = threading.local()
        opened: list[_Connection] = []

        def send(inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
            connection = getattr(local, "connection", None)
            if connection is None:  # one per pool thread, kept on it for the whole call
                connection = local.connection = _Connection(self._new_client)
                opened.append(connection)
            return self._infer_with(connection, model, inputs, outputs, version, cancel)

        def close_opened() -> None:
            for connection in opened:
                connection.close()

        pool = ThreadPoolExecutor(max_in_flight, thread_name_prefix="graphsvc-triton")
        pending: deque[Future] = deque()
        source = iter(requests)
        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < max_in_flight:
                    try:
                        inputs = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    pending.append(pool.submit(send, inputs))
                if not pending:
                    return
                yield pending.popleft().result()
        finally:
            cancel.set()
            for future in pending:  # drop what was not started
                future.cancel()
            pool.shutdown(wait=False)
            running = wait(pending, timeout=self.timeout).not_done
            if not running:
                close_opened()
            else:  # a connection is closed only once no request runs on it any more
                left = [len(running)]
                lock = threading.Lock()

                def one_finished(_: Future) -> None:
                    with lock:
                        left[0] -= 1
                        last = left[0] == 0
                    if last:
                        close_opened()

                for future in running:
                    future.add_done_callback(one_finished)
