"""Writes to ArangoDB: upserts through the import API in chunks (`onDuplicate=replace`,
`complete=true`), removals, and attribute write-back as one AQL UPDATE per chunk after
one existence check of all keys, so a missing key writes nothing.

`complete=true` makes a chunk all-or-nothing on a single server only: on a cluster the
chunk is split by shard and what reached the other shards stays when one fails (the
import and AQL writes are not transactional across shards —
https://docs.arangodb.com/3.12/aql/high-level-operations/update/#transactionality).
Multi-chunk writes are never one transaction: the import API takes no stream
transaction. Upserts are idempotent, so replaying a write after a failure is safe.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import pyarrow as pa
from arango import errno as arango_errno

from graphsvc.errors import ArangoError, DocumentNotFound, StoreError
from graphsvc.store.arango import aql
from graphsvc.store.arango.arrow import table_to_documents
from graphsvc.store.arango.connection import KEY_BATCH_SIZE, chunks
from graphsvc.store.arango.errors import as_json
from graphsvc.store.arango.state import ArangoState
from graphsvc.store.checks import (
    SYSTEM_ATTRIBUTES,
    checked_table,
    is_document_id,
    is_document_key,
    keep_last_rows,
    objects,
    write_back_attributes,
)

IMPORT_BATCH_SIZE = 10_000  # documents per import request (~25 MB with 256-d embeddings)


class ArangoWrites(ArangoState):
    """The port's writes; each bumps the collection's change marker."""

    import_batch_size: int = IMPORT_BATCH_SIZE

    def upsert_documents(self, name: str, documents: Iterable[Mapping[str, Any]]) -> int:
        kind = self._kind(name)
        keyed: dict[str, dict] = {}
        unkeyed: list[dict] = []
        for position, document in objects(name, documents):
            body = {k: v for k, v in document.items() if v is not None and k not in ("_id", "_rev")}
            key = body.get("_key")
            if key is not None and not is_document_key(key):
                raise StoreError(f"{name}: document {position} has an invalid _key {key!r}")
            if kind == "edge":
                for end in ("_from", "_to"):
                    value = body.get(end)
                    if not is_document_id(value):
                        raise StoreError(f"{name}: edge {key!r} needs {end} as 'Collection/key', got {value!r}")
            if key is None:
                unkeyed.append(body)
            else:
                keyed.pop(key, None)  # a later document with the same key replaces the earlier one
                keyed[key] = body
        prepared = list(keyed.values()) + unkeyed
        written = sum(self._import(name, chunk) for chunk in chunks(prepared, self.import_batch_size))
        if written:
            self._bump(name)
        return written

    def upsert_table(
        self, name: str, table: pa.Table, state: tuple[str, dict] | None = None, *, checked: bool = False
    ) -> int:
        kind = self._kind(name)
        if not checked:
            if "_key" in table.column_names and pa.types.is_null(table.column("_key").type):
                table = table.drop_columns(["_key"])  # all keys left to the server
            table = checked_table(name, kind, table)
        written = 0
        for batch in table.to_batches(max_chunksize=self.import_batch_size):
            written += self._import(name, table_to_documents(batch))
        if written:
            self._bump(name)
        if state is not None:
            self.put_state(*state)
        return written

    def _import(self, name: str, documents: list[dict]) -> int:
        """One import request; `complete=true`: all documents or none on a single server."""
        if not documents:
            return 0
        with self._errors(name, action=f"importing into '{name}'"), as_json(name, "a document"):
            result = self._db.collection(name).import_bulk(
                documents, on_duplicate="replace", halt_on_error=True, details=True
            )
        if result.get("errors"):
            details = "; ".join(result.get("details", [])[:3])
            raise StoreError(f"ArangoDB rejected {result['errors']} document(s) of '{name}': {details}")
        return int(result.get("created", 0)) + int(result.get("updated", 0))

    def remove_documents(self, name: str, keys: Sequence[str]) -> int:
        self._kind(name)
        removed = 0
        for chunk in chunks(list(dict.fromkeys(keys)), KEY_BATCH_SIZE):
            removed += len(self._all(aql.REMOVE_DOCUMENTS, {"@collection": name, "keys": list(chunk)}, name))
        if removed:
            self._bump(name)
        return removed

    def update_attributes(self, name: str, table: pa.Table) -> int:
        self._kind(name)
        attributes = write_back_attributes(name, table, SYSTEM_ATTRIBUTES.__contains__, "system attribute(s)")
        if table.num_rows == 0 or not attributes:
            return 0
        keys = table.column("_key")
        if keys.null_count:
            raise StoreError(f"{name}: write-back table has rows without a _key")
        table = keep_last_rows(table)
        all_keys = table.column("_key").to_pylist()
        for chunk in chunks(all_keys, KEY_BATCH_SIZE):
            self._raise_first_missing(name, list(chunk))
        written = 0
        for batch in table.to_batches(max_chunksize=self.import_batch_size):
            # nulls travel: a null clears the attribute (keepNull: false), so a row of
            # nulls is a write too, not a row to skip
            rows = table_to_documents(batch, keep_nulls=True)
            try:
                written += self._write(aql.UPDATE_ATTRIBUTES, {"@collection": name, "rows": rows}, name)
            except ArangoError as exc:
                if exc.error_code == arango_errno.DOCUMENT_NOT_FOUND:  # removed since the check
                    self._raise_first_missing(name, [row["_key"] for row in rows])
                raise
        if written:
            self._bump(name)
        return written

    def _raise_first_missing(self, name: str, keys: list[str]) -> None:
        missing = self._all(aql.FIRST_MISSING_KEY, {"@collection": name, "keys": keys}, name)
        if missing:
            raise DocumentNotFound(name, missing[0])
