"""Reads from ArangoDB: pulls as streaming AQL cursors (`stream: true`, 10,000
documents per round trip) turned into Arrow record batches of the requested types,
documents by key, keys by equality or structured filters, and dangling edges."""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Sequence

import pyarrow as pa

from graphsvc.store.arango import aql
from graphsvc.store.arango.arrow import (
    edge_rows_to_record_batch,
    rebatched,
    revision_rows_to_record_batch,
    rows_to_record_batch,
)
from graphsvc.store.arango.connection import KEY_BATCH_SIZE, ArangoConnection, chunks
from graphsvc.store.arango.filters import filter_keys_query
from graphsvc.store.base import Condition, DanglingEdges, KeyRange, ranges_between
from graphsvc.store.checks import check_edge_collection

#: sampled keys per range `key_ranges` asks for: ranges within ~1/8 of each other's size
KEY_SAMPLES_PER_RANGE = 64


def _range_query(bounded: str, open_above: str, key_range: KeyRange) -> tuple[str, dict]:
    """The query for a key range and its bounds: an open lower end is "" (below every
    key), an open upper end takes the query without one."""
    low, high = key_range
    if high is None:
        return open_above, {"low": low or ""}
    return bounded, {"low": low or "", "high": high}


class ArangoReads(ArangoConnection):
    """The port's reads."""

    def pull(
        self,
        name: str,
        attributes: Mapping[str, pa.DataType],
        batch_size: int = 65_536,
    ) -> Iterator[pa.RecordBatch]:
        self._kind(name)
        schema = pa.schema([("_key", pa.string())] + [(a, t) for a, t in attributes.items() if a != "_key"])
        bind_vars = {"@collection": name, "attributes": schema.names}
        rows = self._row_batches(aql.PULL_ATTRIBUTES, bind_vars, name)
        return rebatched(rows, batch_size, lambda part: rows_to_record_batch(part, schema))

    def pull_edges(self, name: str, batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
        check_edge_collection(name, self._kind(name))
        rows = self._row_batches(aql.PULL_EDGES, {"@collection": name}, name)
        return rebatched(rows, batch_size, edge_rows_to_record_batch)

    def pull_range(
        self,
        name: str,
        attributes: Mapping[str, pa.DataType],
        key_range: KeyRange,
        batch_size: int = 65_536,
    ) -> Iterator[pa.RecordBatch]:
        """A streaming cursor over the range (`aql.PULL_KEY_RANGE`), one server batch at a time."""
        self._kind(name)
        schema = pa.schema([("_key", pa.string())] + [(a, t) for a, t in attributes.items() if a != "_key"])
        query, bind_vars = _range_query(aql.PULL_KEY_RANGE, aql.PULL_KEY_RANGE_FROM, key_range)
        rows = self._row_batches(query, {**bind_vars, "@collection": name, "attributes": schema.names}, name)
        return rebatched(rows, batch_size, lambda part: rows_to_record_batch(part, schema))

    def pull_edges_range(self, name: str, key_range: KeyRange, batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
        check_edge_collection(name, self._kind(name))
        query, bind_vars = _range_query(aql.PULL_EDGE_RANGE, aql.PULL_EDGE_RANGE_FROM, key_range)
        rows = self._row_batches(query, {**bind_vars, "@collection": name}, name)
        return rebatched(rows, batch_size, edge_rows_to_record_batch)

    def key_ranges(self, name: str, parts: int) -> list[KeyRange]:
        """Quantiles of about `KEY_SAMPLES_PER_RANGE` sampled keys per range, in the
        server's order (`aql.SAMPLE_KEYS`); the ranges' sizes are as even as the sample."""
        count = self.collection(name).count
        if parts <= 1 or count < 2:
            return [(None, None)]
        every = max(1, count // (parts * KEY_SAMPLES_PER_RANGE))
        sample = self._all(aql.SAMPLE_KEYS, {"@collection": name, "every": every}, name)
        # quantiles of the sample, distinct, in the server's order (a repeat would make an empty range)
        chosen = [sample[len(sample) * p // parts] for p in range(1, parts)] if sample else []
        return ranges_between(list(dict.fromkeys(chosen)))

    def pull_revisions(self, name: str, batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
        self._kind(name)
        rows = self._row_batches(aql.PULL_REVISIONS, {"@collection": name}, name)
        return rebatched(rows, batch_size, revision_rows_to_record_batch)

    def get_documents(self, name: str, keys: Sequence[str], *, attributes: Sequence[str] | None = None
                      ) -> list[dict[str, Any] | None]:
        self._kind(name)
        found: dict[str, dict] = {}
        query, bind_vars = aql.GET_DOCUMENTS, {"@collection": name}
        if attributes is not None:
            query = aql.GET_DOCUMENT_ATTRIBUTES
            bind_vars["attributes"] = ["_key", "_id", "_rev", "_from", "_to", *attributes]
        for chunk in chunks(list(dict.fromkeys(keys)), KEY_BATCH_SIZE):
            for document in self._all(query, {**bind_vars, "keys": list(chunk)}, name):
                found[document["_key"]] = document
        return [found.get(key) for key in keys]

    def select_keys(self, name: str, equals: Mapping[str, Any] | None = None) -> list[str]:
        self._kind(name)
        conditions = list((equals or {}).items())
        bind_vars: dict[str, Any] = {"@collection": name}
        for n, (attribute, value) in enumerate(conditions):
            bind_vars[f"attr_{n}"] = attribute
            bind_vars[f"value_{n}"] = value
        return self._all(aql.select_keys_query(len(conditions)), bind_vars, name)

    def filter_keys(self, name: str, conditions: Sequence[Condition]) -> list[str]:
        self._kind(name)
        query = filter_keys_query(name, conditions)
        return self._all(query.text, query.bind_vars, name)

    def dangling_edges(self, name: str, examples: int = 3) -> DanglingEdges:
        check_edge_collection(name, self._kind(name))
        with self._errors(action="listing collections"):
            existing = [entry["name"] for entry in self._db.collections()]
        bind_vars = {"@collection": name, "existing": existing}
        count = int(self._all(aql.COUNT_DANGLING_EDGES, bind_vars, name)[0])
        found: list[dict] = []
        if count and examples > 0:
            found = self._all(aql.DANGLING_EDGE_EXAMPLES, {**bind_vars, "examples": int(examples)}, name)
        return DanglingEdges(name, count, tuple(found))
