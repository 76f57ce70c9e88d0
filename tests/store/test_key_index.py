"""Key lookups in the embedded store go through its `_key` index."""

import os
import threading
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from graphsvc.errors import StoreError
from graphsvc.store.embedded import EmbeddedStore, active_writer, writer_mark

ODD_KEYS = ["a'b", "x:y@z", "%20sp", "a;DROP", "(1)+2=3", "$!*,.-_"]  # ArangoDB's key characters


def _plan(store: EmbeddedStore, table: str, keys: list[str]) -> str:
    return store._db.sql(f"EXPLAIN ANALYZE SELECT * FROM {table} WHERE _key = ANY($keys)",
                         params={"keys": keys}).fetchall()[0][1]


@pytest.fixture
def path(tmp_path):
    path = tmp_path / "store.duckdb"
    with EmbeddedStore(path) as store:
        store.create_collection("products")
        store.upsert_table("products", pa.table({"_key": [f"P{i:05d}" for i in range(3000)] + ODD_KEYS,
                                                 "title": [f"T{i}" for i in range(3000 + len(ODD_KEYS))]}))
        store.update_attributes("products", pa.table({"_key": ["P00007", "a'b"], "rank": [7, 1]}))
    return path


def test_lookups_probe_the_key_index_of_both_tables_after_a_reopen(path):
    with EmbeddedStore(path, create=False, read_only=True) as store:
        for table in ("docs_products", "attrs_products"):
            plan = _plan(store, table, ["P00007", "P02999"])
            assert "Index Scan" in plan and "Sequential Scan" not in plan
        indexes = store._run("SELECT index_name FROM duckdb_indexes() ORDER BY 1")
        assert indexes == [("attrs_products__key",), ("docs_products__key",)]


def test_lookups_merge_written_attributes_and_give_none_for_missing_keys(path):
    with EmbeddedStore(path, create=False, read_only=True) as store:
        p7, odd, missing = store.get_documents("products", ["P00007", "a'b", "P99999"])
        assert (p7["title"], p7["rank"], odd["title"], odd["rank"], missing) == ("T7", 7, "T3000", 1, None)
        found = store.get_documents("products", ODD_KEYS)
        assert [d["_key"] for d in found] == ODD_KEYS


def test_lookups_of_some_attributes_keep_only_those(path):
    with EmbeddedStore(path) as store:
        store.upsert_documents("products", [{"_key": "P00008", "title": "eight", "size": "large"}])
        store.upsert_documents("products", [{"_key": "P00009", "title": "nine", "size": 3}])  # size: overflow JSON
        p7, p8, p9 = store.get_documents("products", ["P00007", "P00008", "P00009"], attributes=["rank", "size"])
    assert {k: v for k, v in p7.items() if not k.startswith("_")} == {"rank": 7}
    assert {k: v for k, v in p8.items() if not k.startswith("_")} == {"size": "large"}
    assert {k: v for k, v in p9.items() if not k.startswith("_")} == {"size": 3}


def test_lookups_see_updates_and_re_restores(path):
    with EmbeddedStore(path) as store:
        store.update_attributes("products", pa.table({"_key": [f"P{i:05d}" for i in range(3000)],
                                                      "rank": list(range(3000))}))  # attrs rebuilt
        store.upsert_table("products", pa.table({"_key": ["P00007", "new"], "title": ["seven", "N"]}))
        store.update_attributes("products", pa.table({"_key": ["P00009"], "rank": [1.5]}))  # widened: index rebuilt
    with EmbeddedStore(path, create=False, read_only=True) as store:
        p7, p8, p9, new = store.get_documents("products", ["P00007", "P00008", "P00009", "new"])
        assert (p7["title"], "rank" not in p7, p8["rank"], p9["rank"], new["title"]) == ("seven", True, 8, 1.5, "N")
        assert "Index Scan" in _plan(store, "attrs_products", ["P00009"])


def test_a_store_written_before_the_key_index_gets_it_when_opened_to_write(path):
    db = duckdb.connect(str(path))
    db.execute('DROP INDEX "docs_products__key"')
    db.close()
    with EmbeddedStore(path) as store:
        assert "Index Scan" in _plan(store, "docs_products", ["P00001"])


def test_a_writer_announces_itself_and_waits_for_a_reader_to_let_go(path):
    reader = duckdb.connect(str(path), read_only=True)
    threading.Timer(0.3, reader.close).start()
    started = time.monotonic()
    with EmbeddedStore(path) as store:
        assert active_writer(path) == os.getpid()
        assert time.monotonic() - started >= 0.25
        store.update_attributes("products", pa.table({"_key": ["P00001"], "rank": [1]}))
    assert active_writer(path) is None and not writer_mark(path).exists()


def test_a_writer_that_cannot_get_the_file_says_what_holds_it(path, monkeypatch):
    monkeypatch.setattr("graphsvc.store.embedded.LOCK_WAIT_S", 0.2)
    reader = duckdb.connect(str(path), read_only=True)
    try:
        with pytest.raises(Exception, match="GRAPHSVC_STORE_LOCK_WAIT"):
            EmbeddedStore(path)
    finally:
        reader.close()
    assert not writer_mark(path).exists()


def test_a_released_store_lets_another_process_read_and_reopens_for_the_next_write(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "store.duckdb"
    store = EmbeddedStore(path)
    store.create_collection("products")
    store.upsert_documents("products", [{"_key": "a", "title": "first"}, {"_key": "b", "title": "second"}])
    assert active_writer(path) == os.getpid()
    store.release()  # a job between its pull and its write-back
    assert active_writer(path) is None
    reader = ("import sys; sys.path.insert(0, sys.argv[2]); from graphsvc.store.embedded import EmbeddedStore; "
              "s = EmbeddedStore(sys.argv[1], create=False, read_only=True); "
              "print(s.get_documents('products', ['b'])[0]['title'])")
    done = subprocess.run([sys.executable, "-c", reader, str(path), str(Path(__file__).resolve().parents[2])],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "second"
    # the next call opens the file again, as the writer
    store.update_attributes("products", pa.table({"_key": ["b"], "title": ["rewritten"]}))
    assert active_writer(path) == os.getpid()
    assert store.get_documents("products", ["b"])[0]["title"] == "rewritten"
    store.close()
    assert active_writer(path) is None
    with pytest.raises(StoreError, match="closed"):
        store.get_documents("products", ["b"])
