"""One writer per store file: the writer mark, waiting for readers, letting go between a
job's phases."""

import os
import threading
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from graphsvc.errors import StoreError
from graphsvc.store.embedded import EmbeddedStore
from graphsvc.store.embedded.writer_lock import active_writer, writer_mark


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
    monkeypatch.setattr("graphsvc.store.embedded.writer_lock.LOCK_WAIT_S", 0.2)
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
    done = subprocess.run([sys.executable, "-c", reader, str(path), str(Path(__file__).resolve().parents[3])],
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


def test_range_readers_in_other_processes_open_the_released_store_read_only_at_once(tmp_path):
    """Issue 14: the Ray pull's read tasks (one per key range) open the file at the store's
    address, read-only, several at the same time, once the driver has let go; while the
    driver holds it, a reader is refused with a StoreError saying so."""
    import subprocess
    import sys

    path = tmp_path / "store.duckdb"
    store = EmbeddedStore(path)
    store.create_collection("products")
    store.upsert_table("products", pa.table({"_key": [f"P{i:04d}" for i in range(2000)], "n": list(range(2000))}))
    ranges = store.key_ranges("products", 2)
    address = store.address()
    assert address.url == str(path) and address.coordinators == 1
    reader = ("import sys, time; sys.path.insert(0, sys.argv[1]); import pyarrow as pa; "
              "from graphsvc.store.base import StoreAddress; "
              "low, high = (sys.argv[3] or None), (sys.argv[4] or None); "
              "s = StoreAddress(sys.argv[2]).open(); "
              "rows = sum(b.num_rows for b in s.pull_range('products', {'n': pa.int64()}, (low, high))); "
              "time.sleep(1.0); s.close(); print(rows)")
    root = str(Path(__file__).resolve().parents[3])

    def start(key_range):
        return subprocess.Popen([sys.executable, "-c", reader, root, str(path), key_range[0] or "", key_range[1] or ""],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    refused = start(ranges[0])
    _, error = refused.communicate(timeout=60)
    assert refused.returncode != 0 and "cannot open store" in error  # the driver still writes the file
    store.release()
    readers = [start(key_range) for key_range in ranges]  # both hold the file for a second
    counts = [int(r.communicate(timeout=60)[0]) for r in readers]
    assert all(r.returncode == 0 for r in readers)
    assert sum(counts) == 2000 and all(counts)
    store.close()
