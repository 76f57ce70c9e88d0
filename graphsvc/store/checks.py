"""Checks of documents before a backend writes them, the same for every backend:
ArangoDB's rules for keys and edge ends, and "the last row of a repeated key wins"."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from graphsvc.errors import StoreError

DOCUMENT_KEY_PATTERN = r"^[A-Za-z0-9_\-:.@()+,=;$!*'%]{1,254}$"
DOCUMENT_ID_PATTERN = r"^[A-Za-z0-9_\-]+/[A-Za-z0-9_\-:.@()+,=;$!*'%]+$"


def check_keys(collection: str, keys: pa.Array | pa.ChunkedArray) -> None:
    """Every non-null key is a string ArangoDB accepts; StoreError names the first bad one."""
    if not (pa.types.is_string(keys.type) or pa.types.is_large_string(keys.type)):
        raise StoreError(f"{collection}: _key must be a string column, got {keys.type}")
    valid = pc.fill_null(pc.match_substring_regex(keys, DOCUMENT_KEY_PATTERN), True)
    if not pc.all(valid).as_py():
        raise StoreError(f"{collection}: invalid _key {keys.filter(pc.invert(valid))[0].as_py()!r}")


def check_edge_ends(collection: str, table: pa.Table) -> None:
    """`_from` and `_to` present on every edge as 'Collection/key'."""
    for end in ("_from", "_to"):
        if end not in table.column_names:
            raise StoreError(f"{collection}: edges need {end} as 'Collection/key'")
        ends = table.column(end)
        if not (pa.types.is_string(ends.type) or pa.types.is_large_string(ends.type)):
            try:
                ends = ends.cast(pa.string())  # an all-null column comes typed as null
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise StoreError(f"{collection}: {end} must be a string 'Collection/key', got {ends.type}") from None
        ok = pc.fill_null(pc.match_substring_regex(ends, DOCUMENT_ID_PATTERN), False)
        if not pc.all(ok).as_py():
            position = pc.index(ok, False).as_py()
            key = table.column("_key")[position].as_py() if "_key" in table.column_names else position
            raise StoreError(
                f"{collection}: edge {key!r} needs {end} as 'Collection/key', got {ends[position].as_py()!r}"
            )


def last_rows(keys: pa.Array | pa.ChunkedArray) -> np.ndarray | None:
    """Indices of the rows to keep so that each non-null key keeps its last row (in
    order), or None when no key repeats."""
    keys = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
    valid = keys.is_valid().to_numpy(zero_copy_only=False)
    if pc.count_distinct(keys).as_py() == int(valid.sum()):
        return None
    positions = np.arange(len(keys))
    keyed = positions[valid][::-1]
    values = np.asarray(keys.to_numpy(zero_copy_only=False), dtype=object)[keyed]
    _, first_from_end = np.unique(values.astype(str), return_index=True)
    return np.sort(np.concatenate([keyed[first_from_end], positions[~valid]]))


def keep_last_rows(table: pa.Table) -> pa.Table:
    keep = last_rows(table.column("_key"))
    return table if keep is None else table.take(keep)
