"""Documents and Arrow, both ways, as the ArangoDB backend moves them: cursor rows (JSON
objects) into record batches of the types a pull asks for, and Arrow tables into JSON
documents for the import API and write-back."""

from __future__ import annotations

import json
from typing import Any, Iterator, Mapping, Sequence

import pyarrow as pa

from graphsvc.store.json_values import json_ready


def rows_to_record_batch(rows: Sequence[Mapping[str, Any]], schema: pa.Schema) -> pa.RecordBatch:
    """Cursor rows (objects) → a record batch of `schema`: absent attributes are null,
    values are cast to the field types, and values that cannot be are null (a list of
    strings asked for as a number, say); strings asked for get other values as JSON."""
    columns = [_arrow_column([row.get(f.name) for row in rows], f.type) for f in schema]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def edge_rows_to_record_batch(rows: Sequence[Sequence[str]]) -> pa.RecordBatch:
    """`[_from, _to]` pairs → a record batch of two string columns."""
    return _string_pairs(rows, ["_from", "_to"])


def revision_rows_to_record_batch(rows: Sequence[Sequence[str]]) -> pa.RecordBatch:
    """`[_key, _rev]` pairs → a record batch of two string columns."""
    return _string_pairs(rows, ["_key", "_rev"])


def _string_pairs(rows: Sequence[Sequence[str]], names: list[str]) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [pa.array([row[0] for row in rows], pa.string()), pa.array([row[1] for row in rows], pa.string())],
        names=names,
    )


def _arrow_column(values: list, arrow_type: pa.DataType) -> pa.Array:
    try:
        return pa.array(values, type=arrow_type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError, OverflowError):
        return pa.array([_coerced(value, arrow_type) for value in values], type=arrow_type)


def _coerced(value: Any, arrow_type: pa.DataType) -> Any:
    """One value as `arrow_type` accepts it, or None when it does not fit."""
    if value is None:
        return None
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    try:
        return pa.array([value], type=arrow_type)[0].as_py()
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError, OverflowError):
        pass
    try:
        return pa.array([value]).cast(arrow_type, safe=False)[0].as_py()
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError, OverflowError):
        return None


def table_to_documents(table: pa.Table | pa.RecordBatch, *, keep_nulls: bool = False) -> list[dict[str, Any]]:
    """Rows → documents. A null top-level attribute is left out (an upsert's "absent"),
    or with `keep_nulls` sent as null (a write-back's "clear it": the UPDATE's
    `keepNull: false` then removes the attribute)."""
    columns = {}
    for name, column in zip(table.schema.names, table.columns):
        chunk = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        columns[name] = json_ready(chunk)
    ready = pa.RecordBatch.from_pydict(columns) if columns else None
    if ready is None:
        return [{} for _ in range(table.num_rows)]
    if keep_nulls:
        return ready.to_pylist()
    return [{k: v for k, v in row.items() if v is not None} for row in ready.to_pylist()]


def rebatched(row_batches: Iterator[list], batch_size: int, convert) -> Iterator[pa.RecordBatch]:
    """Server batches of rows → record batches of exactly `batch_size` rows (the last
    one shorter). Each server batch becomes Arrow as soon as it arrives, so no more
    than one batch of Python objects is alive at a time; what waits for the next
    record batch to fill up waits as Arrow (~1/10 the memory at 256-d vectors)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    pending: list[pa.RecordBatch] = []
    held = 0
    for rows in row_batches:
        if not rows:
            continue
        converted = convert(rows)
        del rows  # the Python objects go now, not when the next batch arrives
        pending.append(converted)
        held += converted.num_rows
        while held >= batch_size:
            table = pa.Table.from_batches(pending)
            yield _one_batch(table.slice(0, batch_size))
            rest = table.slice(batch_size)
            pending, held = ([_one_batch(rest)] if rest.num_rows else []), rest.num_rows
    if held:
        yield _one_batch(pa.Table.from_batches(pending))


def _one_batch(table: pa.Table) -> pa.RecordBatch:
    """A table's rows as one record batch (its chunks concatenated)."""
    batches = table.combine_chunks().to_batches()
    return batches[0] if len(batches) == 1 else pa.RecordBatch.from_pylist([], schema=table.schema)
