"""Reading and writing `arangodump` directories.

A dump directory holds, per collection, a `*.structure.json` (name, type, indexes) and
zero or more data files with one JSON value per line, optionally gzip-compressed and
optionally split into numbered parts. Data lines are either plain documents (the
default since ArangoDB 3.8) or markers in the older envelope format
(`{"type": 2300, "data": {...}}`). Everything here streams, so memory stays bounded
by the longest line (`iter_operations`) or by one block of lines (`iter_line_blocks`,
which restores use: blocks parsed to Arrow by pyarrow's JSON reader), never by the size
of a data file.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Literal, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from graphsvc.errors import DumpFormatError
from graphsvc.store.base import (
    ARANGO_TYPE_DOCUMENT,
    ARANGO_TYPE_EDGE,
    EdgeDefinition,
    GraphInfo,
)
from graphsvc.store.checks import DOCUMENT_ID_PATTERN, DOCUMENT_KEY_PATTERN, keep_last_rows

__all__ = [
    "Dump",
    "DumpCollection",
    "DumpOperation",
    "open_dump",
    "iter_operations",
    "iter_operation_batches",
    "read_graphs",
    "write_dump",
    "dump_being_built",
    "write_structure",
    "write_graphs",
    "LineBlock",
    "RejectedLine",
    "Upserts",
    "Removals",
    "ParsedBlock",
    "iter_line_blocks",
    "parse_block",
]

# Envelope marker types written by arangodump.
MARKER_DOCUMENT = 2300  # insert/replace; the document is in `data`
MARKER_LEGACY = 2301  # older document/edge marker: `key`/`rev` at top level plus `data`
MARKER_REMOVE = 2302  # removal of `key`
_MARKERS = frozenset({MARKER_DOCUMENT, MARKER_LEGACY, MARKER_REMOVE})

GRAPHS_COLLECTION = "_graphs"

_HASH = r"(?:_(?P<hash>[0-9a-fA-F]{32}))?"
_STRUCTURE_RE = re.compile(rf"^(?P<base>.+?){_HASH}\.structure\.json$")
_DATA_RE = re.compile(rf"^(?P<base>.+?){_HASH}(?:\.(?P<part>\d+))?\.data\.json(?P<gz>\.gz)?$")

_GZIP_MAGIC = b"\x1f\x8b"
_KINDS = {ARANGO_TYPE_DOCUMENT: "document", ARANGO_TYPE_EDGE: "edge"}
_WRITE_CHUNK = 1 << 20  # bytes buffered before handing lines to gzip/the file


@dataclass(frozen=True)
class DumpCollection:
    name: str
    kind: Literal["document", "edge"]
    structure_path: Path
    data_files: tuple[Path, ...]
    indexes: tuple[dict, ...]

    @property
    def is_system(self) -> bool:
        return self.name.startswith("_")


@dataclass(frozen=True)
class DumpOperation:
    op: Literal["upsert", "remove"]
    document: dict | None
    key: str | None
    path: Path
    line: int


@dataclass(frozen=True)
class Dump:
    directory: Path
    database: str | None
    collections: tuple[DumpCollection, ...]

    def collection(self, name: str) -> DumpCollection:
        for c in self.collections:
            if c.name == name:
                return c
        raise DumpFormatError(str(self.directory), f"the dump holds no collection '{name}'")

    def has_collection(self, name: str) -> bool:
        return any(c.name == name for c in self.collections)


# --------------------------------------------------------------------------- reading


def open_dump(directory: str | os.PathLike) -> Dump:
    """Scan a dump directory: dump.json, ENCRYPTION, structure and data files.

    Reads only the small metadata files; data files are opened by `iter_operations`.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DumpFormatError(str(directory), "is not a directory (expected an arangodump output folder)")

    _check_encryption(directory)
    database = _read_database(directory)

    structures: list[tuple[Path, str | None, str, str, tuple[dict, ...]]] = []
    data_candidates: list[tuple[Path, str, str | None, int | None]] = []
    for entry in sorted(directory.iterdir()):
        if not entry.is_file():
            continue
        m = _STRUCTURE_RE.match(entry.name)
        if m:
            name, kind, indexes = _read_structure(entry)
            structures.append((entry, m.group("hash"), name, kind, indexes))
            continue
        m = _DATA_RE.match(entry.name)
        if m:
            part = int(m.group("part")) if m.group("part") is not None else None
            data_candidates.append((entry, m.group("base"), m.group("hash"), part))

    if not structures and not data_candidates:
        raise DumpFormatError(str(directory), "holds no arangodump files (no *.structure.json)")

    by_name: dict[str, tuple[Path, str | None, str, tuple[dict, ...]]] = {}
    file_base_to_name: dict[str, str] = {}
    for path, hash_, name, kind, indexes in structures:
        if name in by_name:
            raise DumpFormatError(
                str(path), f"collection '{name}' is also described by {by_name[name][0].name}"
            )
        by_name[name] = (path, hash_, kind, indexes)
        # Structure file names may encode the name differently from the content
        # (e.g. extended names); accept data files named after either.
        file_base_to_name.setdefault(_STRUCTURE_RE.match(path.name).group("base"), name)

    parts: dict[str, dict[int, Path]] = {name: {} for name in by_name}
    for path, base, hash_, part in data_candidates:
        name = base if base in by_name else file_base_to_name.get(base)
        if name is None:
            raise DumpFormatError(str(path), f"data file has no matching structure file for collection '{base}'")
        structure_hash = by_name[name][1]
        if hash_ and structure_hash and hash_.lower() != structure_hash.lower():
            raise DumpFormatError(
                str(path), f"data file hash does not match the structure file {by_name[name][0].name}"
            )
        # An unsplit file sorts before numbered parts; two files for one slot is ambiguous.
        slot = -1 if part is None else part
        if slot in parts[name]:
            raise DumpFormatError(
                str(path), f"duplicates data file {parts[name][slot].name} of collection '{name}'"
            )
        parts[name][slot] = path

    collections = [
        DumpCollection(
            name=name,
            kind=kind,  # type: ignore[arg-type]
            structure_path=path,
            data_files=tuple(parts[name][slot] for slot in sorted(parts[name])),
            indexes=indexes,
        )
        for name, (path, _hash, kind, indexes) in by_name.items()
    ]
    collections.sort(key=lambda c: (c.kind != "document", c.name))
    return Dump(directory=directory, database=database, collections=tuple(collections))


def _check_encryption(directory: Path) -> None:
    path = directory / "ENCRYPTION"
    if not path.exists():
        return
    try:
        mode = path.read_bytes()[:200].decode("utf-8", "replace").strip()
    except OSError as e:
        raise DumpFormatError(str(path), f"cannot be read: {e}") from e
    if mode and mode.lower() != "none":
        raise DumpFormatError(
            str(path),
            f"the dump is encrypted ({mode}) and cannot be read without the key — "
            "use arangorestore with --encryption.keyfile",
        )


def _read_small_json(path: Path) -> Any:
    try:
        with path.open("rb") as f:
            return json.loads(f.read())
    except OSError as e:
        raise DumpFormatError(str(path), f"cannot be read: {e}") from e
    except ValueError as e:
        raise DumpFormatError(str(path), f"invalid JSON: {e}") from e


def _read_database(directory: Path) -> str | None:
    path = directory / "dump.json"
    if not path.exists():
        return None  # dumps from old arangodump versions have no dump.json
    meta = _read_small_json(path)
    if not isinstance(meta, dict):
        raise DumpFormatError(str(path), "is not a JSON object")
    database = meta.get("database")
    if not isinstance(database, str) or not database:
        props = meta.get("properties")
        database = props.get("name") if isinstance(props, dict) else None
    return database if isinstance(database, str) and database else None


def _read_structure(path: Path) -> tuple[str, str, tuple[dict, ...]]:
    doc = _read_small_json(path)
    if not isinstance(doc, dict):
        raise DumpFormatError(str(path), "is not a JSON object")
    params = doc.get("parameters")
    params = params if isinstance(params, dict) else {}
    # Old layouts (dump versions 4/5) may keep name/type at the top level.
    name = params.get("name", doc.get("name"))
    type_ = params.get("type", doc.get("type"))
    if not isinstance(name, str) or not name:
        raise DumpFormatError(str(path), "has no collection name (parameters.name)")
    if isinstance(type_, str) and type_.isdigit():
        type_ = int(type_)
    if isinstance(type_, bool) or type_ not in _KINDS:
        raise DumpFormatError(
            str(path), f"collection '{name}' has type {type_!r}; expected 2 (document) or 3 (edge)"
        )
    indexes = doc.get("indexes", [])
    if indexes is None:
        indexes = []
    if not isinstance(indexes, list) or not all(isinstance(i, dict) for i in indexes):
        raise DumpFormatError(str(path), "'indexes' is not a list of objects")
    return name, _KINDS[type_], tuple(indexes)


def _open_data_file(path: Path) -> IO[bytes]:
    raw = path.open("rb")
    try:
        magic = raw.read(2)
        raw.seek(0)
    except OSError:
        raw.close()
        raise
    # Sniff the magic as well as the suffix: a compressed file renamed to `.data.json`
    # still reads, and a `.gz` that is not gzip fails as a corrupt gzip stream.
    if magic == _GZIP_MAGIC or path.name.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw


def _iter_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """Yield (1-based line number, raw line) pairs, reading incrementally."""
    lineno = 0
    try:
        f = _open_data_file(path)
    except OSError as e:
        raise DumpFormatError(str(path), f"cannot be read: {e}") from e
    with f:
        lines = iter(f)
        while True:
            try:
                line = next(lines)
            except StopIteration:
                return
            except (OSError, EOFError, zlib.error) as e:
                # gzip.BadGzipFile is an OSError; truncation shows up as EOFError.
                raise DumpFormatError(str(path), f"corrupt gzip stream: {e}", line=lineno + 1) from e
            lineno += 1
            yield lineno, line


def _require_key(doc: dict, path: Path, lineno: int) -> str:
    key = doc.get("_key")
    if not isinstance(key, str) or not key:
        raise DumpFormatError(str(path), "document has no string '_key'", line=lineno)
    return key


def _is_envelope(obj: dict) -> bool:
    # A plain document may carry its own `type` attribute ("movie", or even 2300);
    # but a document always has `_key` at the top level and a marker never does.
    t = obj.get("type")
    return (
        isinstance(t, int)
        and not isinstance(t, bool)
        and ("data" in obj or "key" in obj)
        and "_key" not in obj
    )


def _parse_line(obj: dict, path: Path, lineno: int) -> DumpOperation:
    if not _is_envelope(obj):
        return DumpOperation("upsert", obj, _require_key(obj, path, lineno), path, lineno)

    t = obj["type"]
    if t not in _MARKERS:
        raise DumpFormatError(str(path), f"unsupported marker type {t}", line=lineno)
    data = obj.get("data")
    if data is not None and not isinstance(data, dict):
        raise DumpFormatError(str(path), f"marker {t} has a 'data' that is not an object", line=lineno)

    if t == MARKER_REMOVE:
        key = obj.get("key")
        if key is None and data is not None:
            key = data.get("_key")
        if not isinstance(key, str) or not key:
            raise DumpFormatError(str(path), "removal marker 2302 has no key", line=lineno)
        return DumpOperation("remove", None, key, path, lineno)

    if data is None:
        raise DumpFormatError(str(path), f"marker {t} has no 'data'", line=lineno)
    if t == MARKER_LEGACY and "_key" not in data:
        key = obj.get("key")
        if isinstance(key, str) and key:
            data = {"_key": key, **data}
    return DumpOperation("upsert", data, _require_key(data, path, lineno), path, lineno)


def _iter_file(path: Path) -> Iterator[DumpOperation]:
    for lineno, raw in _iter_lines(path):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except ValueError as e:  # includes UnicodeDecodeError
            raise DumpFormatError(str(path), f"invalid JSON: {e}", line=lineno) from e
        if not isinstance(obj, dict):
            raise DumpFormatError(
                str(path), f"expected a JSON object, got {type(obj).__name__}", line=lineno
            )
        yield _parse_line(obj, path, lineno)


def iter_operations(collection: DumpCollection) -> Iterator[DumpOperation]:
    """Stream the operations of all data files of `collection`, in file order."""
    for path in collection.data_files:
        yield from _iter_file(path)


def iter_operation_batches(
    collection: DumpCollection, batch_size: int = 10_000
) -> Iterator[list[DumpOperation]]:
    """Like `iter_operations`, grouped into lists of at most `batch_size`."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    batch: list[DumpOperation] = []
    for op in iter_operations(collection):
        batch.append(op)
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def read_graphs(dump: Dump) -> list[GraphInfo]:
    """The named graphs stored in the dump's `_graphs` collection, sorted by name."""
    if not dump.has_collection(GRAPHS_COLLECTION):
        return []
    graphs: dict[str, GraphInfo] = {}
    for op in iter_operations(dump.collection(GRAPHS_COLLECTION)):
        if op.op == "remove":
            graphs.pop(op.key, None)  # type: ignore[arg-type]
            continue
        graphs[op.key] = _graph_from_document(op)  # type: ignore[index]
    return [graphs[name] for name in sorted(graphs)]


def _graph_from_document(op: DumpOperation) -> GraphInfo:
    doc = op.document or {}
    raw_defs = doc.get("edgeDefinitions") or []
    if not isinstance(raw_defs, list):
        raise DumpFormatError(str(op.path), f"graph '{op.key}': edgeDefinitions is not a list", line=op.line)
    defs = []
    for d in raw_defs:
        if not isinstance(d, dict) or not isinstance(d.get("collection"), str):
            raise DumpFormatError(
                str(op.path), f"graph '{op.key}': edge definition without a collection", line=op.line
            )
        ends = []
        for side in ("from", "to"):
            value = d.get(side) or []
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise DumpFormatError(
                    str(op.path),
                    f"graph '{op.key}': '{side}' of edge definition '{d['collection']}' is not a list of names",
                    line=op.line,
                )
            ends.append(tuple(value))
        defs.append(EdgeDefinition(d["collection"], ends[0], ends[1]))
    return GraphInfo(name=op.key, edge_definitions=tuple(defs))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- writing


def _name_hash(name: str) -> str:
    return hashlib.md5(name.encode("utf-8")).hexdigest()


def _dumps(value: Any) -> bytes:
    # allow_nan=False: NaN/Infinity are not JSON and ArangoDB would reject them.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def _write_bytes(path: Path, data: bytes) -> None:
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _graph_document(graph: GraphInfo) -> dict:
    return {
        "_key": graph.name,
        "edgeDefinitions": [
            {"collection": d.collection, "from": list(d.from_collections), "to": list(d.to_collections)}
            for d in graph.edge_definitions
        ],
        "orphanCollections": [],
    }


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
    _write_bytes(directory / f"{stem}.structure.json", _dumps(structure))
    return stem


def write_graphs(directory: Path, graphs: Iterable[GraphInfo], compress: bool = True) -> None:
    """The named graphs as the `_graphs` collection."""
    docs = [_graph_document(g) for g in sorted(graphs, key=lambda g: g.name)]
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


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # not supported on every platform; the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
            docs = [_graph_document(g) for g in sorted(graph_list, key=lambda g: g.name)]
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
        _write_bytes(tmp / "ENCRYPTION", b"none")
        _write_bytes(
            tmp / "dump.json",
            _dumps({"database": database, "useEnvelope": envelope, "properties": {"name": database}}),
        )
        yield tmp
        _fsync_dir(tmp)
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
    _fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- block reading
#
# The restore path reads data files in blocks of raw lines and parses each block with
# pyarrow's C++ JSON reader into Arrow tables, so that no Python code runs per line. A
# block the fast reader cannot take (invalid JSON, a column whose type changes, mixed
# envelope and plain lines, a missing key) is split in halves and retried; pieces small
# enough go through `json.loads` line by line, which names the bad line exactly.

_READ_CHUNK = 4 << 20  # bytes read (decompressed) per call
DEFAULT_BLOCK_LINES = 50_000
DEFAULT_BLOCK_BYTES = 32 << 20  # a block never holds more raw text than this (unless one line is longer)
_PYTHON_PIECE_LINES = 128  # pieces split this small go straight to the line-by-line path

# ArangoDB's document key rules: 1–254 characters from this set.
_ARANGO_KEY = DOCUMENT_KEY_PATTERN
_ARANGO_KEY_RE = re.compile(_ARANGO_KEY)
_EDGE_END = DOCUMENT_ID_PATTERN  # Collection/key
_EDGE_END_RE = re.compile(_EDGE_END)
# Derived or store-managed attributes a dump carries that are not restored as data.
_DROPPED_ATTRIBUTES = ("_id", "_rev")


@dataclass(frozen=True)
class LineBlock:
    """Consecutive complete lines of one data file, as raw bytes (each ends with a newline)."""

    path: Path
    first_line: int  # 1-based number of the first line in `data`
    data: bytes
    line_ends: np.ndarray  # offset of each line's newline in `data`

    @property
    def num_lines(self) -> int:
        return len(self.line_ends)

    @property
    def last_line(self) -> int:
        return self.first_line + self.num_lines - 1

    def line_starts(self) -> np.ndarray:
        starts = np.empty_like(self.line_ends)
        if len(starts):
            starts[0] = 0
            starts[1:] = self.line_ends[:-1] + 1
        return starts

    def raw_line(self, index: int) -> bytes:
        start = 0 if index == 0 else int(self.line_ends[index - 1]) + 1
        return self.data[start : int(self.line_ends[index])]

    def slice(self, lo: int, hi: int) -> "LineBlock":
        """Lines lo..hi-1 (0-based within this block) as a block of their own."""
        start = 0 if lo == 0 else int(self.line_ends[lo - 1]) + 1
        end = int(self.line_ends[hi - 1]) + 1
        return LineBlock(self.path, self.first_line + lo, self.data[start:end], self.line_ends[lo:hi] - start)


def iter_line_blocks(
    path: str | os.PathLike,
    start_after: int = 0,
    max_lines: int = DEFAULT_BLOCK_LINES,
    max_bytes: int = DEFAULT_BLOCK_BYTES,
    first_lines: int | None = None,
) -> Iterator[LineBlock]:
    """Stream a data file (plain or gzip) as blocks of at most `max_lines` lines and about
    `max_bytes` bytes, skipping the first `start_after` lines (to resume). With
    `first_lines`, the first block holds that many lines and each next one twice as many,
    up to `max_lines`: a pipeline that parses one block while writing another gets going
    sooner.

    A corrupt or truncated gzip stream first yields every complete line before the damage,
    then raises DumpFormatError naming the first line that could not be read.
    """
    if max_lines < 1:
        raise ValueError(f"max_lines must be at least 1, got {max_lines}")
    limit = max_lines if first_lines is None else max(1, min(first_lines, max_lines))
    path = Path(path)
    try:
        f = path.open("rb")
    except OSError as e:
        raise DumpFormatError(str(path), f"cannot be read: {e}") from e

    consumed = 0  # complete lines handed out or skipped so far
    chunks: list[bytes] = []
    pending_lines = pending_bytes = 0
    failure: DumpFormatError | None = None
    with f:
        reader = _decompressed_chunks(f, path)
        eof = False
        while not eof:
            try:
                chunk = next(reader, b"")
            except (OSError, EOFError, zlib.error) as e:
                failure = DumpFormatError(str(path), f"corrupt gzip stream: {e}")
                chunk = b""
            if chunk:
                chunks.append(chunk)
                pending_lines += chunk.count(b"\n")
                pending_bytes += len(chunk)
                if pending_lines < limit and pending_bytes < max_bytes:
                    continue
            else:
                eof = True
            buf = b"".join(chunks)
            if eof and failure is None and buf and not buf.endswith(b"\n"):
                buf += b"\n"  # the last line of a file needs no newline
            ends = np.flatnonzero(np.frombuffer(buf, dtype=np.uint8) == 0x0A)
            done = 0  # lines of `ends` handed out
            while done < len(ends):
                if consumed < start_after:
                    skip = min(start_after - consumed, len(ends) - done)
                    done += skip
                    consumed += skip
                    continue
                start = 0 if done == 0 else int(ends[done - 1]) + 1
                available = len(ends) - done
                fit = int(np.searchsorted(ends[done:], start + max_bytes, side="left"))
                take = min(limit, available, max(fit, 1))
                if not eof and take == available and take < limit and fit >= available:
                    break  # a short block: wait for more data unless the file ended
                end = int(ends[done + take - 1]) + 1
                yield LineBlock(path, consumed + 1, buf[start:end], ends[done : done + take] - start)
                done += take
                consumed += take
                limit = min(limit * 2, max_lines)
            tail_start = 0 if done == 0 else int(ends[done - 1]) + 1
            tail = buf[tail_start:]
            chunks = [tail] if tail else []
            pending_lines = len(ends) - done
            pending_bytes = len(tail)
            del buf
    if failure is not None:
        raise DumpFormatError(failure.path, _message_of(failure), line=consumed + 1)


def _decompressed_chunks(raw: IO[bytes], path: Path) -> Iterator[bytes]:
    """The file's bytes, gunzipped when it is gzip (sniffed by magic and suffix, as
    `_open_data_file` does), in chunks of at most `_READ_CHUNK`. zlib is driven directly
    so that everything before a damaged or truncated spot comes out before the error."""
    magic = raw.read(2)
    raw.seek(0)
    if magic != _GZIP_MAGIC and not path.name.endswith(".gz"):
        while chunk := raw.read(_READ_CHUNK):
            yield chunk
        return
    inflater = zlib.decompressobj(wbits=31)
    started = False
    while True:
        data = raw.read(1 << 20)
        if not data:
            if not started:
                return  # an empty file
            if not inflater.eof:
                raise EOFError("compressed file ended before the end-of-stream marker was reached")
            return
        while data:
            started = True
            out = inflater.decompress(data, _READ_CHUNK)
            if out:
                yield out
            if inflater.eof:
                data = inflater.unused_data.lstrip(b"\x00")  # members may follow; zero padding may not count
                inflater = zlib.decompressobj(wbits=31)
                started = bool(data)
                if not data:
                    break
            else:
                data = inflater.unconsumed_tail


@dataclass(frozen=True)
class RejectedLine:
    path: Path
    line: int
    error: str
    raw: bytes

    def to_record(self) -> dict:
        return {
            "file": str(self.path),
            "line": self.line,
            "error": self.error,
            "raw": self.raw.decode("utf-8", "replace").rstrip("\r"),
        }


@dataclass(frozen=True)
class Upserts:
    """Documents to insert or replace, as an Arrow table (`_key`, `_from`/`_to` for edges,
    one column per top-level attribute) or, when no Arrow table can hold them, as dicts."""

    table: pa.Table | None
    documents: list[dict] | None
    last_line: int
    # the table's keys and edge ends are valid and no key repeats: the store need not check again
    checked: bool = False

    @property
    def num_rows(self) -> int:
        return self.table.num_rows if self.table is not None else len(self.documents or ())


@dataclass(frozen=True)
class Removals:
    keys: list[str]
    last_line: int

    @property
    def num_rows(self) -> int:
        return len(self.keys)


@dataclass
class ParsedBlock:
    """What a block of lines asks for, in order. With `stop_at_error`, parsing ends at the
    first bad line: `operations` then hold what came before it and `stopped_at` the line."""

    operations: list[Upserts | Removals] = field(default_factory=list)
    rejected: list[RejectedLine] = field(default_factory=list)
    lines_read: int = 0  # non-blank lines parsed, rejected ones included
    stopped_at: RejectedLine | None = None
    python_lines: int = 0  # lines that needed the line-by-line path

    def merge(self, other: "ParsedBlock") -> None:
        self.operations.extend(other.operations)
        self.rejected.extend(other.rejected)
        self.lines_read += other.lines_read
        self.python_lines += other.python_lines
        self.stopped_at = other.stopped_at


def _message_of(error: DumpFormatError) -> str:
    """The message of a DumpFormatError without its "<file> line <n>: " prefix."""
    prefix = f"{error.path} line {error.line}: " if error.line is not None else f"{error.path}: "
    text = str(error)
    return text[len(prefix):] if text.startswith(prefix) else text


class _NotFast(Exception):
    """This piece needs another try: split, or line by line."""


class _LineByLine(_NotFast):
    """This piece needs the line-by-line path as a whole (splitting would not help)."""


def parse_block(block: LineBlock, kind: Literal["document", "edge"], stop_at_error: bool = True) -> ParsedBlock:
    """Turn a block of data lines into upserts and removals (in file order).

    Envelope lines (2300, 2301 with `key`, 2302 removals) and plain documents are both
    understood; `_id` and `_rev` are dropped. Bad lines (invalid JSON, not an object, no
    string `_key`, an invalid key, an edge without `Collection/key` ends, an unknown marker)
    are rejected with their line number.
    """
    result = ParsedBlock()
    _parse_piece(block, 0, block.num_lines, kind, stop_at_error, result)
    return result


def _parse_piece(block: LineBlock, lo: int, hi: int, kind: str, stop_at_error: bool, result: ParsedBlock) -> None:
    if hi - lo > _PYTHON_PIECE_LINES or (lo, hi) == (0, block.num_lines):
        try:
            result.merge(_parse_fast(block if (lo, hi) == (0, block.num_lines) else block.slice(lo, hi), kind))
            return
        except _LineByLine:
            pass
        except _NotFast:
            middle = (lo + hi) // 2
            _parse_piece(block, lo, middle, kind, stop_at_error, result)
            if result.stopped_at is None:
                _parse_piece(block, middle, hi, kind, stop_at_error, result)
            return
    result.merge(_parse_python(block.slice(lo, hi) if (lo, hi) != (0, block.num_lines) else block, kind, stop_at_error))


# -- the fast path: pyarrow's JSON reader


def _parse_fast(block: LineBlock, kind: str) -> ParsedBlock:
    starts = block.line_starts()
    lengths = block.line_ends - starts
    raw = np.frombuffer(block.data, dtype=np.uint8)
    first = raw[np.minimum(starts, max(len(raw) - 1, 0))] if len(raw) else np.zeros(0, np.uint8)
    blank = (lengths == 0) | ((lengths == 1) & (first == 0x0D))
    row_lines = block.first_line + np.flatnonzero(~blank)
    if len(row_lines) == 0:
        return ParsedBlock()
    longest = int(lengths.max())
    table = _read_json(block.data, longest)
    if table.num_rows != len(row_lines):
        raise _NotFast  # e.g. a whitespace-only line: let the line-by-line path judge it
    names = set(table.column_names)
    if ({"type"} <= names and ("data" in names or "key" in names)
            and pa.types.is_integer(table.schema.field("type").type)):
        envelope_rows = pc.and_(
            pc.is_valid(table["type"]),
            pc.is_null(table["_key"]) if "_key" in names else pa.scalar(True),
        )
        envelope_rows = pc.and_(envelope_rows, _any_valid(table, ("data", "key")))
        count = pc.sum(envelope_rows.cast(pa.int64())).as_py() or 0
        if count == table.num_rows:
            return _envelope_operations(table, row_lines, block, kind)
        if count:
            raise _NotFast  # envelope and plain lines mixed in one piece
    operations = _upserts(_checked_documents(table, kind), row_lines, block, kind)
    return ParsedBlock(operations=operations, lines_read=len(row_lines))


def _read_json(data: bytes, longest_line: int) -> pa.Table:
    read_options = pa_json.ReadOptions(block_size=max(1 << 20, longest_line + 2))
    try:
        table = pa_json.read_json(pa.BufferReader(data), read_options=read_options)
        if _has_timestamp(table.schema):
            # pyarrow turns ISO-8601-looking strings into timestamps; a JSON string stays a string
            schema = pa.schema([pa.field(f.name, _timestamps_as_strings(f.type)) for f in table.schema])
            table = pa_json.read_json(
                pa.BufferReader(data),
                read_options=read_options,
                parse_options=pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer"),
            )
    except (pa.ArrowException, ValueError) as e:  # invalid JSON or UTF-8, a type change, …
        raise _NotFast from e
    return table


def _any_valid(table: pa.Table, columns: tuple[str, ...]) -> pa.ChunkedArray | pa.Scalar:
    present = [pc.is_valid(table[c]) for c in columns if c in table.column_names]
    out = present[0]
    for other in present[1:]:
        out = pc.or_(out, other)
    return out


def _has_timestamp(schema_or_type) -> bool:
    if isinstance(schema_or_type, pa.Schema):
        return any(_has_timestamp(f.type) for f in schema_or_type)
    t = schema_or_type
    if pa.types.is_timestamp(t):
        return True
    if pa.types.is_struct(t):
        return any(_has_timestamp(t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _has_timestamp(t.value_type)
    return False


def _timestamps_as_strings(t: pa.DataType) -> pa.DataType:
    if pa.types.is_timestamp(t):
        return pa.string()
    if pa.types.is_struct(t):
        return pa.struct([
            pa.field(t.field(i).name, _timestamps_as_strings(t.field(i).type)) for i in range(t.num_fields)
        ])
    if pa.types.is_list(t):
        return pa.list_(_timestamps_as_strings(t.value_type))
    if pa.types.is_large_list(t):
        return pa.large_list(_timestamps_as_strings(t.value_type))
    return t


def _envelope_operations(table: pa.Table, row_lines: np.ndarray, block: LineBlock, kind: str) -> ParsedBlock:
    types = table["type"].to_numpy()
    if not np.isin(types, list(_MARKERS)).all():
        raise _NotFast  # the line-by-line path names the unsupported marker
    data = table["data"] if "data" in table.column_names else None
    if data is not None and not (pa.types.is_struct(data.type) or pa.types.is_null(data.type)):
        raise _NotFast
    keys = table["key"] if "key" in table.column_names else None
    if keys is not None and not (pa.types.is_string(keys.type) or pa.types.is_null(keys.type)):
        raise _NotFast
    is_remove = types == MARKER_REMOVE
    result = ParsedBlock(lines_read=table.num_rows)
    # runs of upserts and removals, in file order
    boundaries = np.flatnonzero(np.diff(is_remove.astype(np.int8))) + 1
    run_starts = np.concatenate(([0], boundaries))
    run_ends = np.concatenate((boundaries, [table.num_rows]))
    for start, end in zip(run_starts.tolist(), run_ends.tolist()):
        piece = table.slice(start, end - start)
        last_line = int(row_lines[end - 1])
        if is_remove[start]:
            removal_keys = _coalesce_key(piece, keys_first=True)
            if removal_keys.null_count:
                raise _NotFast
            result.operations.append(Removals(removal_keys.to_pylist(), last_line))
            continue
        if data is None or pa.types.is_null(data.type) or piece["data"].null_count:
            raise _NotFast  # an upsert marker without data
        documents = pa.Table.from_struct_array(piece["data"].combine_chunks())
        if "key" in piece.column_names and (types[start:end] == MARKER_LEGACY).any():
            documents = _set_column(documents, "_key", _coalesce_key(piece, keys_first=False))
        result.operations.extend(_upserts(_checked_documents(documents, kind), row_lines[start:end], block, kind))
    return result


def _coalesce_key(piece: pa.Table, keys_first: bool) -> pa.Array:
    candidates = []
    if "key" in piece.column_names and pa.types.is_string(piece["key"].type):
        candidates.append(piece["key"].combine_chunks())
    data = piece["data"] if "data" in piece.column_names else None
    if data is not None and pa.types.is_struct(data.type) and data.type.get_field_index("_key") >= 0:
        inner = pc.struct_field(data.combine_chunks(), "_key")
        if not pa.types.is_string(inner.type):
            raise _NotFast
        candidates.append(inner)
    if not keys_first:
        candidates.reverse()
    if not candidates:
        return pa.nulls(piece.num_rows, pa.string())
    return pc.coalesce(*candidates) if len(candidates) > 1 else candidates[0]


def _set_column(table: pa.Table, name: str, values) -> pa.Table:
    index = table.schema.get_field_index(name)
    if index >= 0:
        return table.set_column(index, name, values)
    return table.add_column(0, name, values)


def _checked_documents(table: pa.Table, kind: str) -> pa.Table:
    """Drop `_id`/`_rev` and all-null columns; raise _NotFast unless every row has a valid
    `_key` (and edge ends), so that the line-by-line path can name the bad line."""
    if "_key" not in table.column_names or not pa.types.is_string(table.schema.field("_key").type):
        raise _NotFast
    required = ("_key", "_from", "_to") if kind == "edge" else ("_key",)
    for column in required:
        if column not in table.column_names or not pa.types.is_string(table.schema.field(column).type):
            raise _NotFast
        values = table[column]
        if values.null_count:
            raise _NotFast
        pattern = _ARANGO_KEY if column == "_key" else _EDGE_END
        if not pc.all(pc.match_substring_regex(values, pattern)).as_py():
            raise _NotFast
    keep = [
        name
        for name, column in zip(table.column_names, table.columns)
        if name not in _DROPPED_ATTRIBUTES and not pa.types.is_null(column.type)
    ]
    return table.select(keep) if len(keep) != table.num_columns else table


def _upserts(table: pa.Table, row_lines: np.ndarray, block: LineBlock, kind: str) -> list[Upserts]:
    """The table as one upsert, except rows whose nested objects Arrow cannot represent
    faithfully (see `_ambiguous_rows`): those lines are parsed again with `json.loads` and
    go first as dicts, so that the table, written last, carries the block's progress."""
    last_line = int(row_lines[-1])
    ambiguous = np.zeros(table.num_rows, dtype=bool)
    for column in table.columns:
        ambiguous |= _ambiguous_rows(column.combine_chunks())
    count = int(ambiguous.sum())
    if count == 0:
        return [_checked_upserts(table, last_line)]
    if count * 4 > table.num_rows:
        raise _LineByLine  # mostly ambiguous: cheaper line by line
    keys = table.column("_key")
    mask = pa.array(ambiguous)
    odd_keys, plain = keys.filter(mask), table.filter(pc.invert(mask))
    if pc.any(pc.is_in(odd_keys, value_set=plain.column("_key").combine_chunks())).as_py():
        raise _LineByLine  # the same key on both sides: only the file order can decide
    documents = []
    for line in row_lines[ambiguous].tolist():
        operation = _checked_operation(block.raw_line(line - block.first_line), block.path, line, kind)
        documents.append(operation.document)
    return [Upserts(None, documents, last_line), _checked_upserts(plain, last_line)]


def _checked_upserts(table: pa.Table, last_line: int) -> Upserts:
    """A table whose keys and edge ends passed the checks, with the last row of a repeated
    key kept here, in the parsing thread, so the store's writer has nothing left to check."""
    return Upserts(keep_last_rows(table), None, last_line, checked=True)


# -- the slow path: json.loads line by line


def _parse_python(block: LineBlock, kind: str, stop_at_error: bool) -> ParsedBlock:
    result = ParsedBlock()
    pending: list[dict] = []
    pending_last = 0

    def flush() -> None:
        nonlocal pending
        if pending:
            table = _documents_table(pending)
            if table is not None:
                result.operations.append(_checked_upserts(table, pending_last))
            else:
                result.operations.append(Upserts(None, pending, pending_last))
            pending = []

    for index in range(block.num_lines):
        raw = block.raw_line(index)
        if not raw.strip():
            continue
        lineno = block.first_line + index
        result.lines_read += 1
        result.python_lines += 1
        try:
            operation = _checked_operation(raw, block.path, lineno, kind)
        except DumpFormatError as e:
            rejected = RejectedLine(block.path, lineno, _message_of(e), raw)
            if stop_at_error:
                result.lines_read -= 1  # the bad line is not part of what can be committed
                flush()
                result.stopped_at = rejected
                return result
            result.rejected.append(rejected)
            continue
        if operation.op == "remove":
            flush()
            if result.operations and isinstance(result.operations[-1], Removals):
                previous = result.operations.pop()
                result.operations.append(Removals(previous.keys + [operation.key], lineno))
            else:
                result.operations.append(Removals([operation.key], lineno))  # type: ignore[list-item]
            continue
        pending.append(operation.document)  # type: ignore[arg-type]
        pending_last = lineno
    flush()
    return result


def _checked_operation(raw: bytes, path: Path, lineno: int, kind: str) -> DumpOperation:
    try:
        obj = json.loads(raw)
    except ValueError as e:  # includes UnicodeDecodeError
        raise DumpFormatError(str(path), f"invalid JSON: {e}", line=lineno) from e
    if not isinstance(obj, dict):
        raise DumpFormatError(str(path), f"expected a JSON object, got {type(obj).__name__}", line=lineno)
    operation = _parse_line(obj, path, lineno)
    if not _ARANGO_KEY_RE.match(operation.key or ""):
        raise DumpFormatError(
            str(path),
            f"invalid _key {operation.key!r} "
            "(ArangoDB keys are 1–254 characters of letters, digits and _-:.@()+,=;$!*'%)",
            line=lineno,
        )
    if operation.op == "upsert" and kind == "edge":
        for attribute in ("_from", "_to"):
            value = operation.document.get(attribute)  # type: ignore[union-attr]
            if not isinstance(value, str) or not _EDGE_END_RE.match(value):
                raise DumpFormatError(
                    str(path), f"edge '{operation.key}' needs {attribute} as 'Collection/key', got {value!r}",
                    line=lineno,
                )
    if operation.op == "upsert" and any(a in operation.document for a in _DROPPED_ATTRIBUTES):  # type: ignore[operator]
        document = {k: v for k, v in operation.document.items() if k not in _DROPPED_ATTRIBUTES}  # type: ignore[union-attr]
        return DumpOperation("upsert", document, operation.key, path, lineno)
    return operation


def _documents_table(documents: list[dict]) -> pa.Table | None:
    """One Arrow column per attribute; None when Arrow cannot hold the documents faithfully
    (an attribute with values of different types, objects of different shapes, integers
    beyond 64 bits): the store's `upsert_documents` keeps such values as JSON instead."""
    names: dict[str, None] = {}
    for document in documents:
        names.update(dict.fromkeys(document))
    columns, kept = [], []
    try:
        for name in names:
            column = pa.array([d.get(name) for d in documents])
            if pa.types.is_null(column.type):
                continue
            columns.append(column)
            kept.append(name)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return None
    table = pa.table(columns, names=kept)
    return None if any(_ambiguous_rows(c.combine_chunks()).any() for c in table.columns) else table


def _ambiguous_rows(array: pa.Array) -> np.ndarray:
    """Rows holding a nested object with a null member or no members at all. Arrow fills
    the members an object lacks with nulls, so such a column cannot tell `{"a": 1}` from
    `{"a": 1, "b": null}`; the dict path keeps the difference."""
    t = array.type
    rows = np.zeros(len(array), dtype=bool)
    if pa.types.is_struct(t):
        valid = array.is_valid().to_numpy(zero_copy_only=False)
        if t.num_fields == 0:
            return valid
        for i in range(t.num_fields):
            child = pc.struct_field(array, [i])
            rows |= valid & child.is_null().to_numpy(zero_copy_only=False)
            rows |= _ambiguous_rows(child)
    elif (pa.types.is_list(t) or pa.types.is_large_list(t)) and not pa.types.is_null(t.value_type):
        values = array.flatten()
        inner = _ambiguous_rows(values)
        if inner.any():
            parents = pc.list_parent_indices(array).to_numpy()
            rows[parents[inner]] = True
    return rows
