"""Every GRAPHSVC_* environment variable, in one place: its name, default and meaning.

CLI options take their environment variable, default and help from here
(`graphsvc.clitools.env_option`); library code reads a variable with `read(VARIABLE)`,
which parses it and names the variable when its value is unusable. `Settings` is what the
two top-level CLI groups hand to their commands: the environment first, flags over it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from graphsvc.errors import ConfigError


@dataclass(frozen=True)
class Variable:
    name: str
    default: Any
    help: str
    kind: Callable[[str], Any] = str
    choices: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.name


def read(variable: Variable, environ: Mapping[str, str] | None = None) -> Any:
    """The variable's value, parsed to its kind; its default when unset or empty."""
    text = (os.environ if environ is None else environ).get(variable.name, "").strip()
    if not text:
        return variable.default
    if variable.choices and text.lower() not in variable.choices:
        raise ConfigError(f"{variable.name} must be {', '.join(variable.choices[:-1])} or {variable.choices[-1]}, "
                          f"not '{text}'")
    try:
        return variable.kind(text.lower() if variable.choices else text)
    except ValueError:
        raise ConfigError(f"{variable.name}={text} is not a valid {variable.kind.__name__} — "
                          f"unset it or give e.g. {variable.default!r}") from None


def _path(text: str) -> Path:
    return Path(text).expanduser()


# -- where things are ------------------------------------------------------------------------------
STORE = Variable("GRAPHSVC_STORE", "var/graphsvc.duckdb",
                 "Store: a file path (embedded DuckDB store), duckdb://PATH or arangodb://user@host:8529/db.")
INDEX_DIR = Variable("GRAPHSVC_INDEX_DIR", Path("var/indexes"), "Where published indexes live.", _path)
MODEL_REPOSITORY = Variable("GRAPHSVC_MODEL_REPOSITORY", Path("model_repository"),
                            "Triton model repository (the exported models).", _path)
TRITON_URL = Variable("GRAPHSVC_TRITON_URL", "grpc://localhost:8001",
                      "Triton server, grpc://host:port or http://host:port.")
DEVICE = Variable("GRAPHSVC_DEVICE", None, "Where in-process models run: cpu or cuda (default: cuda when present).")

# -- ArangoDB --------------------------------------------------------------------------------------
ARANGO_PASSWORD_FILE = Variable("GRAPHSVC_ARANGO_PASSWORD_FILE", None,
                                "File holding the ArangoDB password (else ARANGO_PASSWORD).", _path)
ARANGO_CA_FILE = Variable("GRAPHSVC_ARANGO_CA_FILE", None, "CA bundle for arangodbs:// servers.")

# -- the embedded store ----------------------------------------------------------------------------
STORE_LOCK_WAIT = Variable("GRAPHSVC_STORE_LOCK_WAIT", 30.0,
                           "Seconds a writer waits for readers (a running 'graphsvc serve') to let go.", float)
# with 3GB a restore of the ogbn-products catalogue peaks at 3.5 GB RSS (4.4 GB with 4GB), and was no slower
EMBEDDED_MEMORY_LIMIT = Variable("GRAPHSVC_EMBEDDED_MEMORY_LIMIT", "3GB", "DuckDB's memory_limit for the store.")

# -- the HTTP service ------------------------------------------------------------------------------
HOST = Variable("GRAPHSVC_HOST", "127.0.0.1",
                "Address 'graphsvc serve' binds; anything but loopback should go with GRAPHSVC_API_TOKEN.")
PORT = Variable("GRAPHSVC_PORT", 8080, "Port 'graphsvc serve' listens on.", int)
API_TOKEN = Variable("GRAPHSVC_API_TOKEN", None, "Bearer token the HTTP service requires (never a flag).")
SERVE_CONFIG = Variable("GRAPHSVC_SERVE_CONFIG", None,
                        "Internal: the service's settings, handed by 'graphsvc serve' to its workers as JSON.")

# -- Triton: the server ----------------------------------------------------------------------------
TRITONSERVER = Variable("GRAPHSVC_TRITONSERVER", None,
                        "The tritonserver binary (default: nvidia-pytriton's, then tritonserver on PATH).", _path)
TRITON_HOST = Variable("GRAPHSVC_TRITON_HOST", "127.0.0.1", "Address 'graphsvc triton serve' binds.")
TRITON_RUNTIME_DIR = Variable("GRAPHSVC_TRITON_RUNTIME_DIR", Path("var/triton-runtime"),
                              "Where 'graphsvc triton serve' lays out the repository Triton loads.", _path)
TRITON_THREADS = Variable("GRAPHSVC_TRITON_THREADS", None,
                          "Torch threads per Python-backend model instance (default: cores / instances).", int)

# -- Triton: the client ----------------------------------------------------------------------------
TRITON_RETRIES = Variable("GRAPHSVC_TRITON_RETRIES", 8, "Retries of a transient Triton failure.", int)
TRITON_BACKOFF = Variable("GRAPHSVC_TRITON_BACKOFF", 0.5, "First retry delay, seconds (doubles).", float)
TRITON_MAX_BACKOFF = Variable("GRAPHSVC_TRITON_MAX_BACKOFF", 8.0, "Longest retry delay, seconds.", float)
TRITON_SHM = Variable("GRAPHSVC_TRITON_SHM", "auto",
                      "Shared memory with Triton: auto (gRPC to a loopback address), on, off.",
                      choices=("auto", "on", "off"))

# -- where the batch jobs run ----------------------------------------------------------------------
EXECUTOR = Variable("GRAPHSVC_EXECUTOR", "local",
                    "Where the jobs compute: local (this process) or ray (a Ray cluster; pip install "
                    "graphsvc[ray]).", choices=("local", "ray"))
RAY_ADDRESS = Variable("GRAPHSVC_RAY_ADDRESS", None,
                       "Ray cluster for --executor ray: auto, ray://host:10001 or host:6379 "
                       "(default: a Ray started on this machine for the job).")
RAY_READERS = Variable("GRAPHSVC_RAY_READERS", 4,
                       "Ray: key ranges read at once by read tasks, per store coordinator (the embedded "
                       "store counts as one).", int)
RAY_WRITERS = Variable("GRAPHSVC_RAY_WRITERS", 4,
                       "Ray on ArangoDB: write-back shards bulk-updated at once by workers, per coordinator.", int)

# -- tests -----------------------------------------------------------------------------------------
TEST_KILL_AT = Variable("GRAPHSVC_TEST_KILL_AT", None,
                        "Tests only: SIGKILL the job at this kill point (phase or phase:count).")

VARIABLES: tuple[Variable, ...] = tuple(v for v in globals().values() if isinstance(v, Variable))


@dataclass(frozen=True)
class Settings:
    """What every command needs: the environment first, CLI flags over it."""

    store: str = STORE.default
    triton_url: str = TRITON_URL.default
    index_dir: Path = field(default_factory=lambda: INDEX_DIR.default)
    model_repository: Path = field(default_factory=lambda: MODEL_REPOSITORY.default)
    password_file: Path | None = None  # ArangoDB password; ARANGO_PASSWORD is read by the backend

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        return cls(
            store=read(STORE, environ),
            triton_url=read(TRITON_URL, environ),
            index_dir=read(INDEX_DIR, environ),
            model_repository=read(MODEL_REPOSITORY, environ),
            password_file=read(ARANGO_PASSWORD_FILE, environ),
        )

    def with_overrides(self, **overrides) -> "Settings":
        """Apply CLI flags that were given (None means 'not given')."""
        given = {k: v for k, v in overrides.items() if v is not None}
        for key in ("index_dir", "model_repository", "password_file"):
            if key in given:
                given[key] = Path(given[key])
        return replace(self, **given)
