"""Files that are whole or absent: written aside, optionally fsynced, renamed in.

Every job's output (manifests, snapshots, reports, checkpoints, dumps, journals) goes
through here, so that a killed process never leaves a half-written file under its final
name. `durable=True` also fsyncs the data and the directory, for what must survive the
machine (published versions, snapshots); journals skip it (a lost batch is recomputed).
"""

from __future__ import annotations

import json
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator


def fsync_path(path: str | os.PathLike) -> None:
    """fsync a file or a directory (a directory's fsync makes renames in it durable);
    platforms that cannot open a directory are let be: the rename is still atomic."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def aside(path: Path, tag: str = "") -> Path:
    """A hidden, unique name beside `path` (same directory, so the rename is atomic)."""
    return path.with_name(f".{path.name}.{tag}{secrets.token_hex(4)}.tmp")


def replace(tmp: Path, path: Path, durable: bool = False) -> None:
    """Rename `tmp` over `path`; `durable`: fsync the file first and the directory after."""
    if durable:
        fsync_path(tmp)
    os.replace(tmp, path)
    if durable:
        fsync_path(path.parent)


@contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb", durable: bool = False,
                **open_kwargs) -> Iterator[IO[Any]]:
    """Open a file beside `path` to write; on a clean exit it replaces `path`, on an
    error it is removed and `path` is untouched."""
    path = Path(path)
    tmp = aside(path)
    try:
        with open(tmp, mode, **open_kwargs) as handle:
            yield handle
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        replace(tmp, path)
        if durable:
            fsync_path(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_path(path: str | os.PathLike, durable: bool = False) -> Iterator[Path]:
    """A temporary path beside `path` for writers that want a file name (torch.save,
    savefig, shutil.copy2); renamed over `path` on a clean exit, removed on an error."""
    path = Path(path)
    tmp = aside(path)
    try:
        yield tmp
        replace(tmp, path, durable=durable)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes, durable: bool = False) -> Path:
    with atomic_file(path, "wb", durable=durable) as handle:
        handle.write(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str, durable: bool = False) -> Path:
    return write_bytes(path, text.encode("utf-8"), durable=durable)


def write_json(path: str | os.PathLike, value: Any, durable: bool = False, indent: int | None = 2) -> Path:
    return write_text(path, json.dumps(value, indent=indent) + "\n", durable=durable)
