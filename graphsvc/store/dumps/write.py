"""Writing arangodump directories: deterministic (the same input gives byte-identical files)
and atomic (a dump is built in a temporary sibling and renamed into place)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Literal, Mapping

from graphsvc.files import fsync_path, write_bytes
from graphsvc.store.base import ARANGO_TYPE_DOCUMENT, ARANGO_TYPE_EDGE, GraphInfo
from graphsvc.store.dumps.graphs import GRAPHS_COLLECTION, graph_document
from graphsvc.store.dumps.operations import MARKER_DOCUMENT

_WRITE_CHUNK = 1 << 20  # bytes buffered before handing lines to gzip/the file


def _name_hash(name: str) -> str:
    return hashlib.md5(name.encode("utf-8")).hexdigest()


def _dumps(value: Any) -> bytes:
    # allow_nan=False: NaN/Infinity are not JSON and ArangoDB would reject them.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def write_structure(directory: Path, name: str, kind: str) -> str:
    """Write `<name>_<md5>.structure.json`; returns the stem data files are named after
    (`<stem>.data.json[.gz]`, or `<stem>.<n>.data.json[.gz]` when split)."""
    stem = f"{name}_{_name_hash(name)}"
    structure = {
        "indexes": [],
        "parameters": {
            "name": name,
            "type": ARANGO_TYPE_EDGE if kind == "edge" else ARANGO_TYPE_DOCUMENT,
            "isSystem": name.startswith("_"),
            "keyOptions": {"type": "traditional", "allowUserKeys": True},
        },
    }
    write_bytes(directory / f"{stem}.structure.json", _dumps(structure), durable=True)
    return stem


def write_graphs(directory: Path, graphs: Iterable[GraphInfo], compress: bool = True) -> None:
    """The named graphs as the `_graphs` collection."""
    docs = [graph_document(g) for g in sorted(graphs, key=lambda g: g.name)]
    _write_collection(directory, GRAPHS_COLLECTION, "document", docs, False, compress)


def _write_collection(
    directory: Path,
    name: str,
    kind: str,
    documents: Iterable[Mapping[str, Any]],
    envelope: bool,
    compress: bool,
) -> None:
    stem = write_structure(directory, name, kind)

    data_path = directory / (f"{stem}.data.json.gz" if compress else f"{stem}.data.json")
    with data_path.open("wb") as raw:
        # filename="" and mtime=0 keep the gzip header free of run-specific bytes.
        out: IO[bytes] = (
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6)  # type: ignore[assignment]
            if compress
            else raw
        )
        buf = io.BytesIO()
        for i, doc in enumerate(documents, 1):
            if not isinstance(doc, Mapping):
                raise ValueError(f"collection '{name}': document {i} is not a mapping")
            key = doc.get("_key")
            if not isinstance(key, str) or not key:
                raise ValueError(f"collection '{name}': document {i} has no string '_key'")
            if kind == "edge" and not (isinstance(doc.get("_from"), str) and isinstance(doc.get("_to"), str)):
                raise ValueError(f"collection '{name}': edge '{key}' needs string '_from' and '_to'")
            if not isinstance(doc, dict):
                doc = dict(doc)
            buf.write(_dumps({"type": MARKER_DOCUMENT, "data": doc} if envelope else doc))
            buf.write(b"\n")
            if buf.tell() >= _WRITE_CHUNK:
                out.write(buf.getvalue())
                buf = io.BytesIO()
        out.write(buf.getvalue())
        if compress:
            out.close()
        raw.flush()
        os.fsync(raw.fileno())


def write_dump(
    directory: str | os.PathLike,
    database: str,
    collections: Iterable[tuple[str, Literal["document", "edge"], Iterable[Mapping[str, Any]]]],
    graphs: Iterable[GraphInfo] = (),
    envelope: bool = False,
    compress: bool = True,
) -> Path:
    """Write a modern arangodump directory, replacing any existing one at `directory`.

    Documents are streamed. The dump is built in a temporary sibling directory and
    renamed into place, so readers never see a half-written dump. Output is
    deterministic: the same input gives byte-identical files.
    """
    with dump_being_built(directory, database, envelope) as tmp:
        seen: set[str] = set()
        graph_list = list(graphs)
        for name, kind, documents in collections:
            if not isinstance(name, str) or not name or "/" in name or os.sep in name or name in (".", ".."):
                raise ValueError(f"invalid collection name {name!r}")
            if kind not in ("document", "edge"):
                raise ValueError(f"collection '{name}': kind must be 'document' or 'edge', got {kind!r}")
            if name in seen or (graph_list and name == GRAPHS_COLLECTION):
                raise ValueError(f"collection '{name}' is given more than once")
            seen.add(name)
            _write_collection(tmp, name, kind, documents, envelope, compress)
        if graph_list:
            docs = [graph_document(g) for g in sorted(graph_list, key=lambda g: g.name)]
            _write_collection(tmp, GRAPHS_COLLECTION, "document", docs, envelope, compress)
    return Path(directory)


@contextmanager
def dump_being_built(directory: str | os.PathLike, database: str, envelope: bool = False) -> Iterator[Path]:
    """A temporary sibling of `directory` holding `ENCRYPTION` and `dump.json`, for the
    caller to fill; on leaving without error it replaces `directory` in one rename (so
    readers never see a half-written dump), on an error it is removed."""
    target = Path(directory)
    if target.exists() and not target.is_dir():
        raise ValueError(f"{target} exists and is not a directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        write_bytes(tmp / "ENCRYPTION", b"none", durable=True)
        write_bytes(
            tmp / "dump.json",
            _dumps({"database": database, "useEnvelope": envelope, "properties": {"name": database}}),
            durable=True,
        )
        yield tmp
        fsync_path(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp creates 0700; a dump is an ordinary folder
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    # Move any previous dump aside first; os.rename cannot replace a non-empty directory.
    old: Path | None = None
    try:
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.rmdir(old)
            os.rename(target, old)
        os.rename(tmp, target)
    except BaseException:
        if old is not None and old.exists() and not target.exists():
            os.rename(old, target)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_path(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
