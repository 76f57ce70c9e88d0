"""Cursor rows into Arrow record batches, and Arrow tables into JSON documents."""

import pyarrow as pa

from graphsvc.store.arango.arrow import edge_rows_to_record_batch, rows_to_record_batch, table_to_documents


def test_cursor_rows_become_a_typed_record_batch_with_nulls_for_missing_values():
    schema = pa.schema(
        [("_key", pa.string()), ("features", pa.list_(pa.float32())), ("category", pa.int64()), ("title", pa.string())]
    )
    rows = [
        {"_key": "a", "features": [1, 2.5], "category": 3, "title": "Dune"},
        {"_key": "b", "category": 4.0},
        {"_key": "c", "features": "not a list", "category": "7", "title": 1984},
    ]
    batch = rows_to_record_batch(rows, schema)
    assert batch.schema == schema
    assert batch.to_pylist() == [
        {"_key": "a", "features": [1.0, 2.5], "category": 3, "title": "Dune"},
        {"_key": "b", "features": None, "category": 4, "title": None},
        {"_key": "c", "features": None, "category": 7, "title": "1984"},
    ]


def test_edge_rows_become_from_and_to_columns():
    batch = edge_rows_to_record_batch([["p/a", "p/b"], ["p/b", "p/c"]])
    assert batch.schema == pa.schema([("_from", pa.string()), ("_to", pa.string())])
    assert batch.column(1).to_pylist() == ["p/b", "p/c"]


def test_table_rows_become_json_documents_without_null_attributes():
    table = pa.table(
        {
            "_key": ["a", "b", "c"],
            "embedding": pa.array([[0.1, 0.2], None, [0.3]], pa.list_(pa.float32())),
            "score": pa.array([0.1, None, 2.0], pa.float32()),
            "genre": pa.array(["x", "y", None]).dictionary_encode(),
            "pair": pa.array([[1, 2], [3, 4], [5, 6]], pa.list_(pa.int64(), 2)),
        }
    )
    assert table_to_documents(table) == [
        {"_key": "a", "embedding": [0.1, 0.2], "score": 0.1, "genre": "x", "pair": [1, 2]},
        {"_key": "b", "genre": "y", "pair": [3, 4]},
        {"_key": "c", "embedding": [0.3], "score": 2.0, "pair": [5, 6]},
    ]
    # a slice (what to_batches gives) converts only its own rows
    assert [d["_key"] for d in table_to_documents(table.slice(1, 2))] == ["b", "c"]
    assert table_to_documents(table.slice(2, 1).to_batches()[0])[0]["embedding"] == [0.3]
