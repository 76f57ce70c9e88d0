"""The store as the HTTP service holds it: opened when a request first needs it, kept
open, and let go of while a job writes the embedded file."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Iterator

from graphsvc.errors import StoreError
from graphsvc.service.errors import Unavailable
from graphsvc.store import GraphStore, is_server_url, open_store


class StoreAccess:
    """The store, opened when a request first needs it and kept open.

    The embedded store is a DuckDB file: one process may write it, or many read it. The
    service keeps one read-only connection (a 10-key `fields=` lookup is then an index
    probe, ~2 ms at 2.45M documents; opening the file per request cost 30-300 ms) and
    lets go of it as soon as a job announces that it wants to write
    (`<store>.writer`, see `EmbeddedStore`): a watcher looks every `WATCH_S`, and each
    request looks before it reads. While the job holds the file, requests that need the
    store get a 503 at once (no waiting) naming the job; the next request after the job
    has closed the store reopens it and sees what the job wrote. With `hold=True` the
    service never lets go (a writing job waits GRAPHSVC_STORE_LOCK_WAIT seconds, then
    stops with an error). ArangoDB is one shared connection."""

    WATCH_S = 0.1

    def __init__(self, url: str | None, password_file: str | Path | None = None, hold: bool = False):
        self.url = url
        self.password_file = password_file
        self.hold = hold
        self._shared: GraphStore | None = None
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None
        self._closed = threading.Event()

    @property
    def _embedded_path(self) -> str:
        return self.url.removeprefix("duckdb://")

    def _open_embedded(self) -> GraphStore:
        from graphsvc.store.embedded import EmbeddedStore

        try:
            return EmbeddedStore(self._embedded_path, create=False, read_only=True)
        except StoreError as exc:
            if "lock" in str(exc).lower():
                raise Unavailable(f"the store {self.url} is being written by a job; "
                                  "fields and filters are back when it finishes") from None
            raise Unavailable(str(exc)) from None

    def _writer(self) -> int | None:
        from graphsvc.store.embedded.writer_lock import active_writer

        return None if self.hold else active_writer(self._embedded_path)

    def _let_go(self) -> None:  # with self._lock held
        if self._shared is not None:
            self._shared.close()
            self._shared = None

    def _watch(self) -> None:
        """Lets go of the file when a job wants to write, even while no request comes."""
        while not self._closed.wait(self.WATCH_S):
            if self._shared is not None and self._writer() is not None:
                with self._lock:
                    self._let_go()

    @contextlib.contextmanager
    def open(self) -> Iterator[GraphStore]:
        if not self.url:
            raise Unavailable("this service has no store: fields and filters need --store / GRAPHSVC_STORE")
        with self._lock:  # one connection, one request at a time on it
            if self._shared is None:
                if is_server_url(self.url):
                    self._shared = open_store(self.url, password_file=self.password_file)
                else:
                    writer = self._writer()
                    if writer is not None:
                        raise Unavailable(f"the store {self.url} is being written by a job (pid {writer}); "
                                          "fields and filters are back when it finishes")
                    self._shared = self._open_embedded()
                    if self._watcher is None and not self.hold:
                        self._watcher = threading.Thread(target=self._watch, name="store-watcher", daemon=True)
                        self._watcher.start()
            elif not is_server_url(self.url) and self._writer() is not None:
                self._let_go()
                raise Unavailable(f"the store {self.url} is being written by a job; "
                                  "fields and filters are back when it finishes")
            yield self._shared

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            self._let_go()
