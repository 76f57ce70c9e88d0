"""One settings object: GRAPHSVC_* environment variables first, CLI flags override them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

DEFAULT_STORE = "var/graphsvc.duckdb"
DEFAULT_TRITON_URL = "grpc://localhost:8001"
DEFAULT_INDEX_DIR = "var/indexes"
DEFAULT_MODEL_REPOSITORY = "model_repository"


@dataclass(frozen=True)
class Settings:
    store: str = DEFAULT_STORE
    triton_url: str = DEFAULT_TRITON_URL
    index_dir: Path = field(default_factory=lambda: Path(DEFAULT_INDEX_DIR))
    model_repository: Path = field(default_factory=lambda: Path(DEFAULT_MODEL_REPOSITORY))
    password_file: Path | None = None  # ArangoDB password; ARANGO_PASSWORD is read by the backend

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        return cls(
            store=env.get("GRAPHSVC_STORE", DEFAULT_STORE),
            triton_url=env.get("GRAPHSVC_TRITON_URL", DEFAULT_TRITON_URL),
            index_dir=Path(env.get("GRAPHSVC_INDEX_DIR", DEFAULT_INDEX_DIR)),
            model_repository=Path(env.get("GRAPHSVC_MODEL_REPOSITORY", DEFAULT_MODEL_REPOSITORY)),
            password_file=(
                Path(env["GRAPHSVC_ARANGO_PASSWORD_FILE"]) if env.get("GRAPHSVC_ARANGO_PASSWORD_FILE") else None
            ),
        )

    def with_overrides(self, **overrides) -> "Settings":
        """Apply CLI flags that were given (None means 'not given')."""
        given = {k: v for k, v in overrides.items() if v is not None}
        for key in ("index_dir", "model_repository", "password_file"):
            if key in given:
                given[key] = Path(given[key])
        return replace(self, **given)
