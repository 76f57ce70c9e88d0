"""The one Triton client of graphsvc (KServe v2 over gRPC or HTTP, binary tensors).

    client = TritonClient("grpc://localhost:8001")      # or http://host:8000, or host:port (= gRPC)
    out = client.infer("model", {"x__0": x, "y__1": y})  # {"output name": np.ndarray}
    for out in client.infer_many("model", batches, max_in_flight=4): ...

Errors: an unreachable server raises TritonUnavailable (after a few retries with
backoff); a request the server rejects raises TritonInferenceError naming the model.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence
from urllib.parse import urlsplit

import numpy as np
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from graphsvc.config import DEFAULT_TRITON_URL as DEFAULT_URL
from graphsvc.errors import ConfigError, TritonInferenceError, TritonUnavailable

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


class TritonClient:
    """Client for one Triton server; safe to share between threads (one connection per thread)."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        retries: int = 3,
        backoff: float = 0.25,
        timeout: float = 60.0,
        verbose: bool = False,
    ):
        self.protocol, self.address = parse_url(url)
        self.url = f"{self.protocol}://{self.address}"
        self.retries = max(0, int(retries))
        self.backoff = float(backoff)
        self.timeout = float(timeout)
        self.verbose = verbose
        self._local = threading.local()
        self._clients: list = []
        self._lock = threading.Lock()
        self._output_names: dict[tuple[str, str], list[str]] = {}

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

    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._new_client()
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            try:
                client.close()
            except Exception:  # noqa: BLE001
                pass
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

    def _call(self, fn: Callable[[Any], Any], *, model: str | None = None, what: str = "", retry: bool = True,
              client=None):
        """fn(client), retrying connection errors with exponential backoff, errors mapped to graphsvc ones."""
        attempt = 0
        while True:
            try:
                return fn(client if client is not None else self._client())
            except Exception as exc:  # noqa: BLE001 — mapped below
                error = self._error(exc, model=model, what=what)
                if error is None:
                    raise
                if isinstance(error, TritonUnavailable) and retry and attempt < self.retries:
                    delay = self.backoff * (2**attempt)
                    LOG.debug("Triton at %s: %s; retrying in %.2fs", self.url, _describe(exc), delay)
                    attempt += 1
                    time.sleep(delay)
                    continue
                raise error from None

    # -- health and metadata ------------------------------------------------------------

    def is_live(self) -> bool:
        try:
            return bool(self._call(lambda c: c.is_server_live(), retry=False))
        except TritonUnavailable:
            return False

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
                            if s.state and s.state != "READY" and not (s.state == "UNAVAILABLE" and s.reason == "unloaded")
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

    def _outputs_of(self, client, model: str, version: str) -> list[str]:
        key = (model, version)
        names = self._output_names.get(key)
        if names is None:
            meta = self._call(lambda c: c.get_model_metadata(model, version), model=model, client=client)
            names = [o["name"] for o in meta["outputs"]]
            self._output_names[key] = names
        return names

    def _request(self, client, model: str, inputs: Mapping[str, Any], outputs: Sequence[str] | None,
                 version: str) -> tuple[list, list | None]:
        """(InferInput list, InferRequestedOutput list or None) for one request."""
        if self._http:
            import tritonclient.http as mod
        else:
            import tritonclient.grpc as mod
        infer_inputs = []
        for name, value in inputs.items():
            array = _as_array(value)
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
            names = list(outputs) if outputs is not None else self._outputs_of(client, model, version)
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

    def _infer_with(self, client, model: str, inputs: Mapping[str, Any], outputs: Sequence[str] | None,
                    version: str = "") -> dict[str, np.ndarray]:
        infer_inputs, requested = self._request(client, model, inputs, outputs, version)
        if self._http:
            call = lambda c: c.infer(model, infer_inputs, model_version=version, outputs=requested)  # noqa: E731
        else:
            call = lambda c: c.infer(model, infer_inputs, model_version=version, outputs=requested,  # noqa: E731
                                     client_timeout=self.timeout)
        return self._decode(self._call(call, model=model, client=client), outputs)

    def infer(self, model: str, inputs: Mapping[str, Any], outputs: Sequence[str] | None = None,
              version: str = "") -> dict[str, np.ndarray]:
        """Run one request; returns {output name: array} (all outputs unless `outputs` names some)."""
        return self._infer_with(self._client(), model, inputs, outputs, version)

    def infer_many(self, model: str, requests: Iterable[Mapping[str, Any]], outputs: Sequence[str] | None = None,
                   max_in_flight: int = 4, version: str = "") -> Iterator[dict[str, np.ndarray]]:
        """Run many requests with up to `max_in_flight` concurrently; yields results in request order.

        `requests` is consumed lazily, so it may be a generator over a large data set. Each
        worker thread owns its connection (the HTTP client is gevent-based: a connection
        must stay on the thread that made it; its async_infer is ~10 ms per request).
        The first failing request raises (in order); the remaining ones are dropped.
        """
        if max_in_flight <= 1:
            for inputs in requests:
                yield self.infer(model, inputs, outputs, version)
            return

        tasks: queue.SimpleQueue = queue.SimpleQueue()
        results: dict[int, tuple[bool, Any]] = {}
        done = threading.Condition()

        def worker() -> None:
            client = None
            try:
                while True:
                    item = tasks.get()
                    if item is None:
                        return
                    index, inputs = item
                    try:
                        if client is None:
                            client = self._new_client()
                        outcome = (True, self._infer_with(client, model, inputs, outputs, version))
                    except BaseException as exc:  # noqa: BLE001 — re-raised in the caller's thread
                        outcome = (False, exc)
                    with done:
                        results[index] = outcome
                        done.notify_all()
            finally:
                if client is not None:
                    try:
                        client.close()
                    except Exception:  # noqa: BLE001
                        pass

        workers = [
            threading.Thread(target=worker, name=f"graphsvc-triton-{i}", daemon=True) for i in range(max_in_flight)
        ]
        for thread in workers:
            thread.start()
        source = iter(requests)
        submitted = yielded = 0
        exhausted = False
        try:
            while True:
                while not exhausted and submitted - yielded < max_in_flight:
                    try:
                        inputs = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    tasks.put((submitted, inputs))
                    submitted += 1
                if yielded == submitted:
                    return
                with done:
                    done.wait_for(lambda: yielded in results)
                    ok, value = results.pop(yielded)
                yielded += 1
                if not ok:
                    raise value
                yield value
        finally:
            while True:  # drop what was not started
                try:
                    tasks.get_nowait()
                except queue.Empty:
                    break
            for _ in workers:
                tasks.put(None)
            for thread in workers:
                thread.join(timeout=self.timeout)
