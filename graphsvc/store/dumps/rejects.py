"""The rejects file of a restore that skips bad lines: one JSON object per rejected line
(file, line, error, raw text), durable before the block it came from is committed."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from graphsvc.store.dumps.parse import RejectedLine

REJECTS_FILE_NAME = "restore-rejects.jsonl"


def default_rejects_file(store_url: str | None) -> Path:
    """`restore-rejects.jsonl` beside an embedded store's file, else in the current directory."""
    if store_url and "://" not in store_url.removeprefix("duckdb://") and store_url != ":memory:":
        return Path(store_url.removeprefix("duckdb://")).resolve().parent / REJECTS_FILE_NAME
    return Path.cwd() / REJECTS_FILE_NAME


class RejectsFile:
    """Rejected lines as JSON Lines, flushed to disk before the block they came from is
    committed (a crash may repeat a reject on resume, never lose one). Safe to write from
    the workers of a multi-threaded restore."""

    def __init__(self, path: Path, append: bool):
        self.path = path
        self._file = None
        self._lock = threading.Lock()
        if not append and path.exists():
            path.unlink()  # a fresh restore: the file lists this restore's rejects only

    def write(self, rejected: list[RejectedLine]) -> None:
        with self._lock:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("a", encoding="utf-8")
            for line in rejected:
                self._file.write(json.dumps(line.to_record(), ensure_ascii=False) + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
