"""Checks before a backend writes, the same for every backend: ArangoDB's rules for
collection names, keys and edge ends, "the last row of a repeated key wins", and the
wording of the errors they raise."""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from graphsvc.errors import StoreError

# Python checks use `fullmatch`: with `match`, `$` also matches before a trailing newline,
# so "a\n" would pass and the server refuse it (1221, illegal document key). The patterns
# keep their anchors for Arrow's RE2 (`match_substring_regex`), where `$` is the end of text.
COLLECTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,255}$")
SYSTEM_ATTRIBUTES = ("_key", "_id", "_rev", "_from", "_to")
DOCUMENT_KEY_PATTERN = r"^[A-Za-z0-9_\-:.@()+,=;$!*'%]{1,254}$"
DOCUMENT_ID_PATTERN = r"^[A-Za-z0-9_\-]+/[A-Za-z0-9_\-:.@()+,=;$!*'%]+$"
DOCUMENT_KEY = re.compile(DOCUMENT_KEY_PATTERN)
DOCUMENT_ID = re.compile(DOCUMENT_ID_PATTERN)


def is_document_key(value: object) -> bool:
    """A string ArangoDB accepts as a `_key`, all of it (no trailing newline)."""
    return isinstance(value, str) and DOCUMENT_KEY.fullmatch(value) is not None


def is_document_id(value: object) -> bool:
    """A string 'Collection/key' as `_from`/`_to` need it, all of it."""
    return isinstance(value, str) and DOCUMENT_ID.fullmatch(value) is not None


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


def checked_table(collection: str, kind: str, table: pa.Table) -> pa.Table:
    """`table` ready to write: `_id`/`_rev` dropped (the store assigns them), keys and
    edge ends valid, the last row of a repeated key kept. Rows may lack a `_key` only
    where the backend assigns keys itself."""
    table = table.drop_columns([c for c in ("_id", "_rev") if c in table.column_names])
    if "_key" in table.column_names:
        check_keys(collection, table.column("_key"))
    if kind == "edge":
        check_edge_ends(collection, table)
    return keep_last_rows(table) if "_key" in table.column_names else table


def check_new_collection(name: str, kind: str) -> None:
    if not isinstance(name, str) or not COLLECTION_NAME.fullmatch(name):
        raise StoreError(f"invalid collection name '{name}'")
    if kind not in ("document", "edge"):
        raise StoreError(f"invalid collection kind '{kind}' for '{name}'")


def check_same_kind(name: str, existing: str, kind: str) -> None:
    if existing != kind:
        raise StoreError(f"collection '{name}' exists as a {existing} collection, not {kind}")


def check_edge_collection(name: str, kind: str) -> None:
    if kind != "edge":
        raise StoreError(f"collection '{name}' is not an edge collection")


def write_back_attributes(
    collection: str, table: pa.Table, refused: Callable[[str], bool], what: str = "attribute(s)"
) -> list[str]:
    """The attributes a write-back table writes (its columns but `_key`); StoreError when
    it has no `_key` column or writes an attribute `refused` says no to."""
    if "_key" not in table.column_names:
        raise StoreError(f"{collection}: write-back table has no _key column")
    attributes = [c for c in table.column_names if c != "_key"]
    bad = [a for a in attributes if refused(a)]
    if bad:
        raise StoreError(f"{collection}: cannot write {what} {', '.join(bad)}")
    return attributes


def objects(collection: str, documents: Iterable[Any]) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """(position, document) for each document, StoreError at the first that is not an object."""
    for position, document in enumerate(documents):
        if not isinstance(document, Mapping):
            raise StoreError(f"{collection}: document {position} is not an object")
        yield position, document
