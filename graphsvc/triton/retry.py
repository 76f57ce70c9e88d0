"""Retrying requests to a Triton server: which failures are worth another try, and the backoff.

A server that cannot be reached (down, restarting, connection reset mid-request) is
retried with exponential backoff (`RetryPolicy`: bounded, from GRAPHSVC_TRITON_RETRIES,
GRAPHSVC_TRITON_BACKOFF, GRAPHSVC_TRITON_MAX_BACKOFF or the client's constructor); when
the retries are used up, TritonUnavailable names the URL and how long it tried. A model
that is loading, reloading or shutting down is retried the same way. Any other answer of
the server raises TritonInferenceError naming the model (not retried: sending the request
again gives the same answer).
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Callable, Mapping, TypeVar

from tritonclient.utils import InferenceServerException

from graphsvc.errors import ConfigError, TritonInferenceError, TritonUnavailable
from graphsvc.settings import TRITON_BACKOFF, TRITON_MAX_BACKOFF, TRITON_RETRIES, read

LOG = logging.getLogger(__name__)

T = TypeVar("T")

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
        return cls(retries=read(TRITON_RETRIES, environ), backoff=read(TRITON_BACKOFF, environ),
                   max_backoff=read(TRITON_MAX_BACKOFF, environ))


def is_connection_error(exc: BaseException) -> bool:
    """The request did not reach the server (as opposed to: the server answered with an error)."""
    if isinstance(exc, InferenceServerException):
        status = str(exc.status() or "")
        if status in _GRPC_CONNECTION_STATUSES:
            message = (exc.message() or "").lower()
            if any(hint in message for hint in _CONNECTION_HINTS):
                return True
            return not any(hint in message for hint in _SERVER_SIDE_HINTS)
        return False
    return isinstance(exc, (OSError, TimeoutError, ConnectionError))


def describe(exc: BaseException) -> str:
    """One line for a client exception: the server's message, or the exception's type and text."""
    if isinstance(exc, InferenceServerException):
        message = exc.message() or str(exc)
        return message.strip()
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def triton_error(exc: BaseException, url: str, *, model: str | None = None, what: str = "") -> Exception | None:
    """The graphsvc error for a client exception (None: not a Triton/connection error)."""
    if is_connection_error(exc):
        error = TritonUnavailable(url, describe(exc))
        error.detail = describe(exc)
        return error
    if isinstance(exc, InferenceServerException):
        subject = f"model '{model}'" if model else (what or "request")
        return TritonInferenceError(f"Triton at {url}: {subject}: {describe(exc)}")
    return None


def call_with_retries(fn: Callable[[], T], *, url: str, policy: RetryPolicy, retry: bool = True,
                      model: str | None = None, what: str = "", reset: Callable[[], None],
                      wait: Callable[[float], bool]) -> T:
    """fn(), with connection errors and transient model states retried as `policy` says.

    `reset` runs after a connection error (the next try gets a fresh connection); `wait(s)`
    sleeps s seconds and returns True when the caller gave up meanwhile (the error is then
    raised at once). Errors come out as TritonUnavailable or TritonInferenceError, with
    `attempts` set; exceptions that are not Triton's pass through unchanged.
    """
    attempt = 0
    started = time.monotonic()
    while True:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 — mapped below
            error = triton_error(exc, url, model=model, what=what)
            if error is None:
                raise
            transient = not isinstance(error, TritonUnavailable) and any(
                hint in str(error).lower() for hint in _TRANSIENT_MODEL_HINTS)
            if not isinstance(error, TritonUnavailable) and not transient:
                raise error from None
            if not transient:
                reset()
            if retry and attempt < policy.retries:
                attempt += 1
                delay = policy.delay(attempt)
                LOG.warning("Triton at %s: %s; retry %d/%d in %.1fs", url, describe(exc), attempt,
                            policy.retries, delay)
                if wait(delay):
                    error.attempts = attempt  # the retry that was due is not made
                    raise error from None
                continue
            if retry and attempt:
                detail = (f"{describe(exc)}; gave up after {attempt + 1} attempts over "
                          f"{time.monotonic() - started:.1f}s")
                if transient:
                    error = TritonInferenceError(f"{error}; gave up after {attempt + 1} attempts over "
                                                 f"{time.monotonic() - started:.1f}s")
                else:
                    error = TritonUnavailable(url, detail)
                    error.detail = detail
            error.attempts = attempt + 1
            raise error from None
