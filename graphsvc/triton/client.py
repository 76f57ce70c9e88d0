"""The one Triton client of graphsvc (KServe v2 over gRPC or HTTP, binary tensors).

    client = TritonClient("grpc://localhost:8001")      # or http://host:8000, or host:port (= gRPC)
    out = client.infer("model", {"x__0": x, "y__1": y})  # {"output name": np.ndarray}
    for out in client.infer_many("model", batches, max_in_flight=4): ...

Errors: a server that cannot be reached is retried with backoff, each retry on a fresh
connection, then TritonUnavailable; a request the server rejects raises
TritonInferenceError naming the model (`graphsvc.triton.retry`).

Large requests to a server on this machine (a loopback gRPC URL) go through system shared
memory (`graphsvc.triton.shm`) unless GRAPHSVC_TRITON_SHM=off: the tensors are written
into a /dev/shm region instead of being serialised into the request.
"""

from __future__ import annotations

import logging
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
from tritonclient.utils import np_to_triton_dtype

from graphsvc.errors import ConfigError, TritonInferenceError, TritonUnavailable
from graphsvc.settings import TRITON_URL
from graphsvc.triton.retry import RetryPolicy, call_with_retries
from graphsvc.triton.shm import (
    NoSharedMemory,
    OutputSpecs,
    SharedMemoryChannel,
    infer_shared,
    remove_stale_regions,
    shared_memory_wanted,
    worth_shared_memory,
)

LOG = logging.getLogger(__name__)

_DEFAULT_PORTS = {"grpc": 8001, "http": 8000, "https": 443}


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
        url: str = TRITON_URL.default,
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
        self._output_specs_cache: dict[tuple[str, str], OutputSpecs | None] = {}

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
        """fn(client), retried as the RetryPolicy says on a fresh connection after a connection
        error (see graphsvc.triton.retry); a closed client or a set `cancel` stops the retries."""
        connection = connection if connection is not None else self._connection()
        return call_with_retries(lambda: fn(connection.get()), url=self.url, policy=self.retry_policy, retry=retry,
                                 model=model, what=what, reset=connection.reset,
                                 wait=lambda seconds: self._interrupted_wait(seconds, cancel))

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
        if self.shared_memory and worth_shared_memory(arrays):
            try:
                result = self._call(lambda c: self._infer_shared(c, connection, model, arrays, outputs, version),
                                    model=model, connection=connection, cancel=cancel)
                with self._lock:
                    self.shm_requests += 1
                return result
            except NoSharedMemory as exc:
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

    def _output_specs(self, client, model: str, version: str) -> OutputSpecs | None:
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

    def _infer_shared(self, client, connection: _Connection, model: str, arrays: dict[str, np.ndarray],
                      outputs: Sequence[str] | None, version: str) -> dict[str, np.ndarray]:
        if connection.shm is None:
            remove_stale_regions()
            connection.shm = SharedMemoryChannel()
        return infer_shared(client, connection.shm, model, arrays, outputs, version, timeout=self.timeout,
                            output_specs=lambda: self._output_specs(client, model, version))

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
