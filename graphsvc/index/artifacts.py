"""Versioned, atomically published index artifacts.

Layout::

    <index_dir>/<collection>/
        CURRENT                 text: name of the live version directory, e.g. "v000002"
        v000001/
            index.faiss         faiss.write_index of the CPU index
            keys.arrow          Arrow IPC file, one string column "_key"; row i = faiss id i
            manifest.json       collection, version, created_at, model, dim, metric, kind,
                                params, count, checksums {file: sha256}, plus extra fields
        v000002/ ...
        .tmp-<random>/          an unfinished publish; ignored by readers, removed by the
                                next publish

A publish writes a complete version into a temp dir, fsyncs it, renames it to the next
version number and then atomically replaces CURRENT, so readers see either the old or
the new version, never a mix. Publishers of one collection are serialised by an flock
on `<collection>/.lock`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from graphsvc.errors import IndexCorrupt, IndexNotFound
from graphsvc.files import fsync_path, write_text
from graphsvc.index.faiss_index import VectorIndex
from graphsvc.runs import kill_point

try:  # POSIX only; elsewhere publishes are not serialised
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

INDEX_FILE = "index.faiss"
KEYS_FILE = "keys.arrow"
MANIFEST_FILE = "manifest.json"
CURRENT_FILE = "CURRENT"
LOCK_FILE = ".lock"
TMP_PREFIX = ".tmp-"
KEY_COLUMN = "_key"
CHECKSUMMED_FILES = (INDEX_FILE, KEYS_FILE)

_VERSION_RE = re.compile(r"^v(\d{6,})$")
_COLLECTION_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-.]*")


def version_dirname(version: int) -> str:
    return f"v{version:06d}"


def parse_version_dirname(name: str) -> int | None:
    m = _VERSION_RE.match(name)
    return int(m.group(1)) if m else None


def _check_collection(collection: str) -> str:
    if not isinstance(collection, str) or not _COLLECTION_RE.fullmatch(collection) or collection in (".", ".."):
        raise ValueError(f"invalid collection name {collection!r}")
    return collection


# ---------------------------------------------------------------- manifest


@dataclass
class Manifest:
    collection: str
    version: int
    created_at: str
    model: dict[str, Any]
    dim: int
    metric: str
    kind: str
    params: dict[str, Any]
    count: int
    checksums: dict[str, str]
    #: caller-supplied fields; stored at the top level of manifest.json
    extra: dict[str, Any] = field(default_factory=dict)

    _FIELDS = (
        "collection", "version", "created_at", "model", "dim", "metric",
        "kind", "params", "count", "checksums",
    )

    def to_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self._FIELDS}
        clash = set(self.extra) & set(out)
        if clash:
            raise ValueError(f"extra manifest fields clash with reserved names: {sorted(clash)}")
        out.update(self.extra)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Manifest":
        if not isinstance(data, dict):
            raise ValueError("manifest is not a JSON object")
        missing = [name for name in cls._FIELDS if name not in data]
        if missing:
            raise ValueError(f"manifest lacks fields: {', '.join(missing)}")
        known = {name: data[name] for name in cls._FIELDS}
        extra = {k: v for k, v in data.items() if k not in cls._FIELDS}
        m = cls(**known, extra=extra)
        if not isinstance(m.version, int) or not isinstance(m.count, int) or not isinstance(m.dim, int):
            raise ValueError("manifest version, count and dim must be integers")
        if not isinstance(m.checksums, dict):
            raise ValueError("manifest checksums must be an object")
        return m

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        return cls.from_dict(json.loads(text))


# ------------------------------------------------------------ loaded index


@dataclass
class LoadedIndex:
    index: VectorIndex
    keys: pa.Array  # string array; row i is the key of faiss id i
    manifest: Manifest
    directory: Path
    _positions: dict[str, int] | None = field(default=None, init=False, repr=False, compare=False)
    _key_list: list[str] | None = field(default=None, init=False, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    @property
    def version(self) -> int:
        return self.manifest.version

    def __len__(self) -> int:
        return len(self.keys)

    def position(self, key: str) -> int | None:
        """The faiss id of `key`, or None when the key is not indexed."""
        positions = self._positions
        if positions is None:
            with self._lock:
                if self._positions is None:
                    self._positions = {k: i for i, k in enumerate(self.keys.to_pylist())}
                positions = self._positions
        return positions.get(key)

    def warm(self) -> "LoadedIndex":
        """Build what the first queries would otherwise build on the request path: the
        key → id map and, for IVF indexes, the direct map that reconstructs a stored
        vector. A service calls this before swapping the index in."""
        if len(self.keys):
            keys = self.keys.to_pylist()
            with self._lock:
                if self._positions is None:
                    self._positions = {k: i for i, k in enumerate(keys)}
            self._key_list = keys  # the same string objects as the map's keys
            self.index.reconstruct_batch([0])
        return self

    def keys_at(self, ids: np.ndarray) -> list[str]:
        """Keys of valid faiss ids (0 ≤ id < len), from the key list when warm."""
        key_list = self._key_list
        if key_list is None:
            return self.key_at(ids)  # type: ignore[return-value]
        return [key_list[i] for i in np.asarray(ids).tolist()]

    def key_at(self, ids: Iterable[int] | np.ndarray | int) -> list[str | None]:
        """Keys for faiss ids; -1 (missing result) maps to None."""
        arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        n = len(self.keys)
        if arr.size and (arr.max() >= n or arr.min() < -1):
            bad = arr[(arr >= n) | (arr < -1)][0]
            raise IndexError(f"faiss id {bad} out of range for {n} keys")
        valid = arr >= 0
        taken = self.keys.take(pa.array(arr[valid])).to_pylist() if valid.any() else []
        if valid.all():
            return taken
        out: list[str | None] = [None] * arr.size
        for pos, key in zip(np.flatnonzero(valid).tolist(), taken):
            out[pos] = key
        return out


# ----------------------------------------------------------------- helpers


def _sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def _keys_array(keys: Sequence[str] | pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    if isinstance(keys, pa.Array):
        if not (pa.types.is_string(keys.type) or pa.types.is_large_string(keys.type)):
            raise ValueError(f"keys must be strings, got Arrow type {keys.type}")
        arr = keys
    else:
        try:
            arr = pa.array(list(keys), type=pa.string())
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise ValueError(f"keys must be strings: {exc}") from None
    if arr.null_count:
        raise ValueError("keys must not contain nulls")
    return arr


def _write_keys(path: Path, keys: pa.Array) -> None:
    table = pa.table({KEY_COLUMN: keys})
    with pa.OSFile(os.fspath(path), "wb") as sink:
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)


def _read_keys(path: Path) -> pa.Array:
    with pa.OSFile(os.fspath(path), "rb") as source:
        table = pa.ipc.open_file(source).read_all()
    if KEY_COLUMN not in table.column_names:
        raise ValueError(f"no '{KEY_COLUMN}' column")
    col = table.column(KEY_COLUMN)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        raise ValueError(f"'{KEY_COLUMN}' column has type {col.type}, expected string")
    return col.combine_chunks()


@contextlib.contextmanager
def _publish_lock(coll_dir: Path):
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(coll_dir / LOCK_FILE, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _remove_leftovers(coll_dir: Path) -> None:
    for entry in coll_dir.iterdir():
        if entry.name.startswith((TMP_PREFIX, f".{CURRENT_FILE}.")):  # and a CURRENT being written aside
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    entry.unlink()


# -------------------------------------------------------------- read side


def list_versions(index_dir: str | os.PathLike, collection: str) -> list[int]:
    """Published version numbers, ascending (unfinished .tmp-* dirs are ignored)."""
    coll_dir = Path(index_dir) / _check_collection(collection)
    if not coll_dir.is_dir():
        return []
    out = []
    for entry in coll_dir.iterdir():
        v = parse_version_dirname(entry.name)
        if v is not None and entry.is_dir():
            out.append(v)
    return sorted(out)


def current_version(index_dir: str | os.PathLike, collection: str) -> int | None:
    """The version CURRENT points at, or None when nothing is published."""
    path = Path(index_dir) / _check_collection(collection) / CURRENT_FILE
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    v = parse_version_dirname(text)
    if v is None:
        raise IndexCorrupt(f"{path}: does not name a version directory ({text[:40]!r})")
    return v


def load_version(
    index_dir: str | os.PathLike, collection: str, version: int, verify: bool = True
) -> LoadedIndex:
    """Load one published version; IndexCorrupt names the offending file."""
    directory = Path(index_dir) / _check_collection(collection) / version_dirname(version)
    if not directory.is_dir():
        raise IndexCorrupt(f"{directory}: version directory is missing")

    manifest_path = directory / MANIFEST_FILE
    try:
        manifest = Manifest.from_json(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexCorrupt(f"{manifest_path}: {MANIFEST_FILE} is missing") from None
    except (ValueError, TypeError) as exc:
        raise IndexCorrupt(f"{manifest_path}: invalid {MANIFEST_FILE}: {exc}") from None
    if manifest.version != version or manifest.collection != collection:
        raise IndexCorrupt(
            f"{manifest_path}: describes {manifest.collection!r} version {manifest.version}, "
            f"expected {collection!r} version {version}"
        )

    for name in CHECKSUMMED_FILES:
        path = directory / name
        if not path.is_file():
            raise IndexCorrupt(f"{path}: {name} is missing")
        if verify:
            expected = manifest.checksums.get(name)
            if not expected:
                raise IndexCorrupt(f"{manifest_path}: no checksum recorded for {name}")
            actual = _sha256(path)
            if actual != expected:
                raise IndexCorrupt(f"{path}: {name} checksum mismatch (expected {expected}, got {actual})")

    index_path = directory / INDEX_FILE
    try:
        index = VectorIndex.load(index_path, metric=manifest.metric)
    except Exception as exc:
        raise IndexCorrupt(f"{index_path}: cannot read {INDEX_FILE}: {exc}") from None
    keys_path = directory / KEYS_FILE
    try:
        keys = _read_keys(keys_path)
    except Exception as exc:
        raise IndexCorrupt(f"{keys_path}: cannot read {KEYS_FILE}: {exc}") from None

    if index.count != manifest.count:
        raise IndexCorrupt(f"{index_path}: {INDEX_FILE} holds {index.count} vectors, manifest says {manifest.count}")
    if len(keys) != manifest.count:
        raise IndexCorrupt(f"{keys_path}: {KEYS_FILE} holds {len(keys)} keys, manifest says {manifest.count}")
    if index.dim != manifest.dim:
        raise IndexCorrupt(f"{index_path}: {INDEX_FILE} has dimension {index.dim}, manifest says {manifest.dim}")
    return LoadedIndex(index=index, keys=keys, manifest=manifest, directory=directory)


def load_current(index_dir: str | os.PathLike, collection: str, verify: bool = True) -> LoadedIndex:
    """Load the version CURRENT points at.

    IndexNotFound when the collection has no published index; IndexCorrupt (naming the
    file) when a checksum mismatches, a file is missing or the counts disagree.
    """
    _check_collection(collection)
    coll_dir = Path(index_dir) / collection
    for attempt in range(3):
        version = current_version(index_dir, collection) if coll_dir.is_dir() else None
        if version is None:
            raise IndexNotFound(collection, str(index_dir))
        try:
            return load_version(index_dir, collection, version, verify=verify)
        except IndexCorrupt:
            # a concurrent publish may have moved CURRENT on and pruned this version
            # between our reading CURRENT and the files; retry on the new version.
            if attempt < 2 and current_version(index_dir, collection) != version:
                continue
            raise
    raise AssertionError("unreachable")  # pragma: no cover


# ------------------------------------------------------------- write side


def publish(
    index_dir: str | os.PathLike,
    collection: str,
    index: VectorIndex,
    keys: Sequence[str] | pa.Array | pa.ChunkedArray,
    model: dict[str, Any],
    extra: dict[str, Any] | None = None,
    keep: int = 3,
    index_file: str | os.PathLike | None = None,
    files: dict[str, Callable[[Path], None]] | None = None,
) -> Manifest:
    """Publish `index` + `keys` as the next version of `collection` and make it current.

    Keeps the newest `keep` versions (and always the current one), removes the rest and
    any leftover .tmp-* directories from crashed publishes. `index_file`: a file that
    already holds `index` as `VectorIndex.save` wrote it, linked (or copied) into the
    version instead of writing the index again; it must not be changed in place later.
    `files`: more files of the version by name, each written by its function given the
    path; checksummed in the manifest like the index (their readers verify them).
    """
    _check_collection(collection)
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    keys_arr = _keys_array(keys)
    if len(keys_arr) != index.count:
        raise ValueError(f"{len(keys_arr)} keys for an index of {index.count} vectors")
    if len(keys_arr) and pc.count_distinct(keys_arr).as_py() != len(keys_arr):
        raise ValueError("keys must be unique")
    if not isinstance(model, dict) or "name" not in model or "version" not in model:
        raise ValueError("model must be a dict with 'name' and 'version'")
    extra = dict(extra or {})
    clash = set(extra) & set(Manifest._FIELDS)
    if clash:
        raise ValueError(f"extra manifest fields clash with reserved names: {sorted(clash)}")

    coll_dir = Path(index_dir) / collection
    coll_dir.mkdir(parents=True, exist_ok=True)
    with _publish_lock(coll_dir):
        _remove_leftovers(coll_dir)
        tmp = coll_dir / f"{TMP_PREFIX}{secrets.token_hex(8)}"
        tmp.mkdir()
        try:
            if index_file is not None:
                try:
                    os.link(index_file, tmp / INDEX_FILE)
                except OSError:  # another file system, or no hard links
                    shutil.copyfile(index_file, tmp / INDEX_FILE)
            else:
                index.save(tmp / INDEX_FILE)
            _write_keys(tmp / KEYS_FILE, keys_arr)
            for name, write in (files or {}).items():
                if name in (*CHECKSUMMED_FILES, MANIFEST_FILE) or "/" in name or name.startswith("."):
                    raise ValueError(f"an extra artifact file cannot be named {name!r}")
                write(tmp / name)
            checksums = {}
            for name in (*CHECKSUMMED_FILES, *(files or {})):
                fsync_path(tmp / name)
                checksums[name] = _sha256(tmp / name)

            existing = list_versions(index_dir, collection)
            cur = current_version(index_dir, collection)
            version = max(existing + ([cur] if cur is not None else []), default=0) + 1
            manifest = Manifest(
                collection=collection,
                version=version,
                created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                model={**model},
                dim=index.dim,
                metric=index.metric,
                kind=index.kind,
                params=index.params,
                count=index.count,
                checksums=checksums,
                extra=extra,
            )
            write_text(tmp / MANIFEST_FILE, manifest.to_json(), durable=True)
            fsync_path(tmp)
            final = coll_dir / version_dirname(version)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fsync_path(coll_dir)
        kill_point("publish_renamed")  # tests: a version directory that CURRENT does not name yet

        write_text(coll_dir / CURRENT_FILE, version_dirname(version) + "\n", durable=True)

        _prune(coll_dir, keep=keep, current=version)
    return manifest


def _prune(coll_dir: Path, keep: int, current: int) -> None:
    versions = sorted(
        (v for e in coll_dir.iterdir() if (v := parse_version_dirname(e.name)) is not None and e.is_dir()),
        reverse=True,
    )
    retained = set(versions[:keep]) | {current}
    for v in versions:
        if v in retained:
            continue
        victim = coll_dir / version_dirname(v)
        # move it out of the version namespace first so readers never see a half-deleted version
        doomed = coll_dir / f"{TMP_PREFIX}old-{victim.name}-{secrets.token_hex(4)}"
        try:
            os.rename(victim, doomed)
        except OSError:
            continue
        shutil.rmtree(doomed, ignore_errors=True)
