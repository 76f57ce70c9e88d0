"""Pulls through the real ArangoStore over the request harness: streaming cursors, one
server batch at a time."""

import pyarrow as pa

import graphsvc.store.arango.reads as reads
from graphsvc.store.arango import aql
from tests.store.arango.harness import ArangoStub, cursor_response
from tests.store.arango.routes_store import serve_collections, serve_queries

SERVER_BATCHES = [
    [{"_key": "a", "score": 1}, {"_key": "b", "score": 2}, {"_key": "c"}],
    [{"_key": "d", "score": 4}, {"_key": "e", "score": 5}, {"_key": "f", "score": 6}],
    [{"_key": "g", "score": 7}],
]


def _streaming_server():
    """POST /_api/cursor answers the first batch with `hasMore` and id 77; each
    POST /_api/cursor/77 the next (https://docs.arangodb.com/3.12/develop/http-api/queries/aql-queries/)."""
    server = ArangoStub()
    serve_collections(server, products="document")
    serve_queries(server, {aql.PULL_ATTRIBUTES: lambda r: cursor_response(SERVER_BATCHES[0], has_more=True,
                                                                          cursor_id="77")})
    following = iter(SERVER_BATCHES[1:])

    def next_batch(request):
        rows = next(following)
        return cursor_response(rows, has_more=rows is not SERVER_BATCHES[-1], cursor_id="77", status=200)

    server.on("post", "/_api/cursor/77", next_batch)
    return server


def test_a_pull_yields_before_it_asks_for_the_next_server_batch():
    """Issue 13, point 8: rows are converted as each server batch arrives, so the first
    record batch comes out before the second cursor request is sent."""
    server = _streaming_server()
    store = server.store()
    batches = store.pull("products", {"score": pa.int64()}, batch_size=2)
    first = next(batches)
    assert first.to_pylist() == [{"_key": "a", "score": 1}, {"_key": "b", "score": 2}]
    assert server.sent("post", "/_api/cursor/77") == []
    rest = [row for batch in batches for row in batch.to_pylist()]
    assert [r["_key"] for r in rest] == ["c", "d", "e", "f", "g"] and rest[0]["score"] is None
    assert len(server.sent("post", "/_api/cursor/77")) == 2
    [opened] = server.sent("post", "/_api/cursor")[:1]
    assert opened.body["options"]["stream"] is True and opened.body["batchSize"] == 10_000
    assert opened.body["bindVars"] == {"@collection": "products", "attributes": ["_key", "score"]}


def test_each_server_batch_becomes_arrow_on_arrival_and_only_arrow_waits_for_a_full_batch(monkeypatch):
    """Issue 13, point 8: with a record batch bigger than the server's batches, the
    Python rows are converted per server batch (3, 3, 1 rows), never piled up."""
    converted = []

    def recording(rows, schema):
        converted.append(len(rows))
        return real(rows, schema)

    real = reads.rows_to_record_batch
    monkeypatch.setattr(reads, "rows_to_record_batch", recording)
    server = _streaming_server()
    batches = list(server.store().pull("products", {"score": pa.int64()}))
    assert converted == [3, 3, 1]
    assert [b.num_rows for b in batches] == [7]
    assert batches[0].column("score").to_pylist() == [1, 2, None, 4, 5, 6, 7]


def test_pulled_batches_have_exactly_the_asked_size_across_server_batches():
    server = _streaming_server()
    sizes = [b.num_rows for b in server.store().pull("products", {"score": pa.int64()}, batch_size=4)]
    assert sizes == [4, 3]
