"""One writer per store file. DuckDB lets one process write a file or many read it; a
writer announces itself in `<file>.writer` (its pid) for as long as it holds the file,
so that a service holding the file read-only lets go, and waits up to
GRAPHSVC_STORE_LOCK_WAIT seconds for that."""

from __future__ import annotations

import os
import time
from pathlib import Path

import duckdb

from graphsvc.errors import StoreError
from graphsvc.settings import STORE_LOCK_WAIT, read

#: how long a writer waits for readers (a `graphsvc serve` holding the file) to let go
LOCK_WAIT_S = read(STORE_LOCK_WAIT)


def writer_mark(path: str | Path) -> Path:
    """The file in which a process writing the store at `path` leaves its pid."""
    return Path(f"{path}.writer")


def active_writer(path: str | Path) -> int | None:
    """The pid of a live process that holds (or waits for) the store at `path` to write."""
    try:
        pid = int(writer_mark(path).read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):  # no mark, a torn one, or its process is gone
        return None
    return pid


def connect(url: str, read_only: bool, mark: Path | None) -> duckdb.DuckDBPyConnection:
    """A connection to the store file at `url`; a writer (`mark`: its writer mark) waits
    for the readers to let go."""
    if mark is not None:
        mark.write_text(str(os.getpid()))
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            return duckdb.connect(url, read_only=read_only)
        except duckdb.Error as exc:
            message = str(exc).splitlines()[0]
            # another process's lock, or this process's own read-only connection
            held = "lock" in message.lower() or "different configuration" in message
            if held and mark is not None and time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            release(mark)
            if held and mark is not None:
                message += (f" — waited {LOCK_WAIT_S:.0f} s for it (GRAPHSVC_STORE_LOCK_WAIT); "
                            "stop the process that holds it (e.g. graphsvc serve --hold-store) and rerun")
            raise StoreError(f"cannot open store {url}: {message}") from None


def release(mark: Path | None) -> None:
    """Remove this process's writer mark (another process's stays)."""
    try:
        if mark is not None and mark.read_text() == str(os.getpid()):
            mark.unlink()
    except OSError:
        pass
