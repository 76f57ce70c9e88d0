"""What one data line asks for, and a collection's data read one operation at a time.

A data line is a plain document (the default since ArangoDB 3.8) or a marker in the older
envelope format (`{"type": 2300, "data": {...}}`). `parse_line` holds the rules for one
line — the same rules `parse_block` applies when a block needs the line-by-line path — and
`iter_operations` applies them to the lines of `iter_line_blocks`. Per-line reading keeps
each document exactly as written (an attribute that is absent stays absent, which an Arrow
table cannot tell from null) with its line number; restores use `parse_block` instead.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

from graphsvc.errors import DumpFormatError
from graphsvc.store.checks import DOCUMENT_ID_PATTERN, DOCUMENT_KEY_PATTERN
from graphsvc.store.dumps.blocks import iter_line_blocks
from graphsvc.store.dumps.layout import DumpCollection

# Envelope marker types written by arangodump.
MARKER_DOCUMENT = 2300  # insert/replace; the document is in `data`
MARKER_LEGACY = 2301  # older document/edge marker: `key`/`rev` at top level plus `data`
MARKER_REMOVE = 2302  # removal of `key`
MARKERS = frozenset({MARKER_DOCUMENT, MARKER_LEGACY, MARKER_REMOVE})

# ArangoDB's document key rules: 1–254 characters from this set.
KEY_PATTERN = DOCUMENT_KEY_PATTERN
_KEY_RE = re.compile(KEY_PATTERN)
EDGE_END_PATTERN = DOCUMENT_ID_PATTERN  # Collection/key
_EDGE_END_RE = re.compile(EDGE_END_PATTERN)
# Derived or store-managed attributes a dump carries that are not restored as data.
DROPPED_ATTRIBUTES = ("_id", "_rev")


@dataclass(frozen=True)
class DumpOperation:
    op: Literal["upsert", "remove"]
    document: dict | None
    key: str | None
    path: Path
    line: int


def iter_operations(collection: DumpCollection) -> Iterator[DumpOperation]:
    """Stream the operations of all data files of `collection`, in file order.

    Raises DumpFormatError naming the file and line of the first bad line, after every
    operation before it has come out.
    """
    for path in collection.data_files:
        for block in iter_line_blocks(path):
            for lineno, raw in block.nonblank_lines():
                yield parse_line(raw, path, lineno, collection.kind)


def parse_line(raw: bytes, path: Path, lineno: int, kind: str) -> DumpOperation:
    """One data line of a collection of `kind` as an operation, `_id`/`_rev` dropped.

    Raises DumpFormatError (file, line, what is wrong) for invalid JSON, a value that is
    not an object, an unknown marker, a missing or invalid `_key`, or an edge without
    `Collection/key` ends.
    """
    try:
        obj = json.loads(raw)
    except ValueError as e:  # includes UnicodeDecodeError
        raise DumpFormatError(str(path), f"invalid JSON: {e}", line=lineno) from e
    if not isinstance(obj, dict):
        raise DumpFormatError(str(path), f"expected a JSON object, got {type(obj).__name__}", line=lineno)
    operation = _operation(obj, path, lineno)
    if not _KEY_RE.fullmatch(operation.key or ""):
        raise DumpFormatError(
            str(path),
            f"invalid _key {operation.key!r} "
            "(ArangoDB keys are 1–254 characters of letters, digits and _-:.@()+,=;$!*'%)",
            line=lineno,
        )
    if operation.op == "upsert" and kind == "edge":
        for attribute in ("_from", "_to"):
            value = operation.document.get(attribute)  # type: ignore[union-attr]
            if not isinstance(value, str) or not _EDGE_END_RE.fullmatch(value):
                raise DumpFormatError(
                    str(path), f"edge '{operation.key}' needs {attribute} as 'Collection/key', got {value!r}",
                    line=lineno,
                )
    if operation.op == "upsert" and any(a in operation.document for a in DROPPED_ATTRIBUTES):  # type: ignore[operator]
        document = {k: v for k, v in operation.document.items() if k not in DROPPED_ATTRIBUTES}  # type: ignore[union-attr]
        return DumpOperation("upsert", document, operation.key, path, lineno)
    return operation


def message_of(error: DumpFormatError) -> str:
    """The message of a DumpFormatError without its "<file> line <n>: " prefix."""
    prefix = f"{error.path} line {error.line}: " if error.line is not None else f"{error.path}: "
    text = str(error)
    return text[len(prefix):] if text.startswith(prefix) else text


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


def _operation(obj: dict, path: Path, lineno: int) -> DumpOperation:
    if not _is_envelope(obj):
        return DumpOperation("upsert", obj, _require_key(obj, path, lineno), path, lineno)

    t = obj["type"]
    if t not in MARKERS:
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
