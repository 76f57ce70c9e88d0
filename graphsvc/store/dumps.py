"""Reading and writing `arangodump` directories, in pure Python.

A dump directory holds, per collection, a `*.structure.json` (name, type, indexes) and
zero or more data files with one JSON value per line, optionally gzip-compressed and
optionally split into numbered parts. Data lines are either plain documents (the
default since ArangoDB 3.8) or markers in the older envelope format
(`{"type": 2300, "data": {...}}`). Everything here streams line by line, so memory
stays bounded by the longest line, not by the size of a data file.
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
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Literal, Mapping

from graphsvc.errors import DumpFormatError
from graphsvc.store.base import (
    ARANGO_TYPE_DOCUMENT,
    ARANGO_TYPE_EDGE,
    EdgeDefinition,
    GraphInfo,
)

__all__ = [
    "Dump",
    "DumpCollection",
    "DumpOperation",
    "open_dump",
    "iter_operations",
    "iter_operation_batches",
    "read_graphs",
    "write_dump",
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


def _write_collection(
    directory: Path,
    name: str,
    kind: str,
    documents: Iterable[Mapping[str, Any]],
    envelope: bool,
    compress: bool,
) -> None:
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
    return target
