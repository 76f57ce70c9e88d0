"""Small arangodump directories written by hand, for the tests of graphsvc.store.dumps."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest

from graphsvc.store.dumps import DumpCollection, iter_operations
from tests.support import SHARED_FIXTURES


def fixture_dir(name: str) -> Path:
    path = SHARED_FIXTURES / name
    if not path.is_dir():
        pytest.skip(f"real fixture {name} not available ({SHARED_FIXTURES} is absent in a fresh clone)")
    return path


def md5(name: str) -> str:
    return hashlib.md5(name.encode()).hexdigest()


def write_structure(directory: Path, name: str, type_: int = 2, hashed: bool = True, layout: str = "modern") -> Path:
    stem = f"{name}_{md5(name)}" if hashed else name
    if layout == "modern":
        content = {"indexes": [{"id": "0", "type": "primary", "fields": ["_key"]}],
                   "parameters": {"name": name, "type": type_, "isSystem": name.startswith("_")}}
    else:  # old dump layouts keep name/type at the top level
        content = {"name": name, "type": type_, "indexes": []}
    path = directory / f"{stem}.structure.json"
    path.write_text(json.dumps(content))
    return path


def write_lines(path: Path, lines: list[str]) -> Path:
    data = "".join(line + "\n" for line in lines).encode()
    if path.name.endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def ops_of(collection: DumpCollection) -> list[tuple[str, str | None, dict | None]]:
    return [(op.op, op.key, op.document) for op in iter_operations(collection)]
