"""What an arangodump directory holds: its collections (name, kind, indexes) and their data
files in reading order, read from `dump.json`, `ENCRYPTION` and the `*.structure.json` files
only; the data files themselves are read by `blocks`."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from graphsvc.errors import DumpFormatError
from graphsvc.store.base import ARANGO_TYPE_DOCUMENT, ARANGO_TYPE_EDGE

_HASH = r"(?:_(?P<hash>[0-9a-fA-F]{32}))?"
_STRUCTURE_RE = re.compile(rf"^(?P<base>.+?){_HASH}\.structure\.json$")
_DATA_RE = re.compile(rf"^(?P<base>.+?){_HASH}(?:\.(?P<part>\d+))?\.data\.json(?P<gz>\.gz)?$")

_KINDS = {ARANGO_TYPE_DOCUMENT: "document", ARANGO_TYPE_EDGE: "edge"}


@dataclass(frozen=True)
class DumpCollection:
    name: str
    kind: Literal["document", "edge"]
    structure_path: Path
    data_files: tuple[Path, ...]
    indexes: tuple[dict, ...]
    # the structure file's `parameters`: keyOptions, shardKeys, numberOfShards, schema, …
    properties: dict = field(default_factory=dict, compare=False)

    @property
    def is_system(self) -> bool:
        return self.name.startswith("_")


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


def open_dump(directory: str | os.PathLike) -> Dump:
    """Scan a dump directory: dump.json, ENCRYPTION, structure and data files.

    Reads only the small metadata files; data files are read by `iter_line_blocks`.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DumpFormatError(str(directory), "is not a directory (expected an arangodump output folder)")

    _check_encryption(directory)
    database = _read_database(directory)

    structures: list[tuple[Path, str | None, str, str, tuple[dict, ...], dict]] = []
    data_candidates: list[tuple[Path, str, str | None, int | None]] = []
    for entry in sorted(directory.iterdir()):
        if not entry.is_file():
            continue
        m = _STRUCTURE_RE.fullmatch(entry.name)
        if m:
            name, kind, indexes, properties = _read_structure(entry)
            structures.append((entry, m.group("hash"), name, kind, indexes, properties))
            continue
        m = _DATA_RE.fullmatch(entry.name)
        if m:
            part = int(m.group("part")) if m.group("part") is not None else None
            data_candidates.append((entry, m.group("base"), m.group("hash"), part))

    if not structures and not data_candidates:
        raise DumpFormatError(str(directory), "holds no arangodump files (no *.structure.json)")

    by_name: dict[str, tuple[Path, str | None, str, tuple[dict, ...], dict]] = {}
    file_base_to_name: dict[str, str] = {}
    for path, hash_, name, kind, indexes, properties in structures:
        if name in by_name:
            raise DumpFormatError(
                str(path), f"collection '{name}' is also described by {by_name[name][0].name}"
            )
        by_name[name] = (path, hash_, kind, indexes, properties)
        # Structure file names may encode the name differently from the content
        # (e.g. extended names); accept data files named after either.
        file_base_to_name.setdefault(_STRUCTURE_RE.fullmatch(path.name).group("base"), name)

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
            properties=properties,
        )
        for name, (path, _hash, kind, indexes, properties) in by_name.items()
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


def _read_structure(path: Path) -> tuple[str, str, tuple[dict, ...], dict]:
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
    return name, _KINDS[type_], tuple(indexes), dict(params)
