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
