"""Blocks of data lines → what they ask the store to do: upserts (as Arrow tables where
Arrow can hold the documents faithfully, else as dicts), removals and rejected lines, in
file order.

Each block is parsed by pyarrow's C++ JSON reader into Arrow tables, so that no Python code
runs per line. A block the fast reader cannot take (invalid JSON, a column whose type
changes, mixed envelope and plain lines, a missing key) is split in halves and retried;
pieces small enough go line by line through `parse_line` (the rules `iter_operations`
applies too), which names the bad line exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from graphsvc.errors import DumpFormatError
from graphsvc.store.checks import keep_last_rows
from graphsvc.store.dumps.blocks import LineBlock
from graphsvc.store.dumps.operations import (
    DROPPED_ATTRIBUTES,
    EDGE_END_PATTERN,
    KEY_PATTERN,
    MARKER_LEGACY,
    MARKER_REMOVE,
    MARKERS,
    message_of,
    parse_line,
)

_PYTHON_PIECE_LINES = 128  # pieces split this small go straight to the line-by-line path


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
    if not np.isin(types, list(MARKERS)).all():
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
        pattern = KEY_PATTERN if column == "_key" else EDGE_END_PATTERN
        if not pc.all(pc.match_substring_regex(values, pattern)).as_py():
            raise _NotFast
    keep = [
        name
        for name, column in zip(table.column_names, table.columns)
        if name not in DROPPED_ATTRIBUTES and not pa.types.is_null(column.type)
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
        operation = parse_line(block.raw_line(line - block.first_line), block.path, line, kind)
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

    for lineno, raw in block.nonblank_lines():
        result.lines_read += 1
        result.python_lines += 1
        try:
            operation = parse_line(raw, block.path, lineno, kind)
        except DumpFormatError as e:
            rejected = RejectedLine(block.path, lineno, message_of(e), raw)
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
