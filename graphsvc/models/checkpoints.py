"""What travels beside a checkpoint: `<checkpoint>.metrics.json`, written by training and
read by evaluation (how the split was made, which edges were held out)."""

from __future__ import annotations

import json
from pathlib import Path

from graphsvc.errors import ModelRepositoryError
from graphsvc.files import write_json

METRICS_SUFFIX = ".metrics.json"


def metrics_path(checkpoint: str | Path) -> Path:
    return Path(str(checkpoint) + METRICS_SUFFIX)


def write_metrics(checkpoint: str | Path, metrics: dict) -> Path:
    return write_json(metrics_path(checkpoint), metrics)


def read_metrics(checkpoint: str | Path) -> dict | None:
    """The training metrics of a checkpoint, or None when it has none (e.g. the workshop's)."""
    path = metrics_path(checkpoint)
    try:
        metrics = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (ValueError, OSError) as exc:
        raise ModelRepositoryError(f"{path}: not valid training metrics JSON: {exc}") from None
    if not isinstance(metrics, dict):
        raise ModelRepositoryError(f"{path}: training metrics must be a JSON object")
    return metrics
