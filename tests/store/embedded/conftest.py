"""A store file with a catalogue, written and closed, for the embedded store's tests."""

import pyarrow as pa
import pytest

from graphsvc.store.embedded import EmbeddedStore


@pytest.fixture
def odd_keys() -> list[str]:
    return ["a'b", "x:y@z", "%20sp", "a;DROP", "(1)+2=3", "$!*,.-_"]  # ArangoDB's key characters


@pytest.fixture
def path(tmp_path, odd_keys):
    path = tmp_path / "store.duckdb"
    with EmbeddedStore(path) as store:
        store.create_collection("products")
        store.upsert_table("products", pa.table({"_key": [f"P{i:05d}" for i in range(3000)] + odd_keys,
                                                 "title": [f"T{i}" for i in range(3000 + len(odd_keys))]}))
        store.update_attributes("products", pa.table({"_key": ["P00007", "a'b"], "rank": [7, 1]}))
    return path
