"""What the HTTP service does per request, as plain functions of plain arguments.

The hot path — "similar to this stored document" without fields or filters — touches
only memory: the key → id map and the vectors of the live index. The store is read
only for what a caller asks for: the `fields` of the hits (one batched lookup for all
hits of a request) and the candidates of a `filter` (one parameterised query, cached per
filter, index version and the collection's change marker).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from graphsvc.errors import StoreError
from graphsvc.index.artifacts import LoadedIndex
from graphsvc.service.errors import BadRequest, NotFound, Unavailable
from graphsvc.service.filters import canonical, filter_object, parse_filter
from graphsvc.service.reloader import IndexReloader
from graphsvc.service.search import Candidates, Ranked, candidates, top_k
from graphsvc.store import GraphStore, is_server_url, open_store
from graphsvc.store.base import Condition

TEXT_BATCH = 32  # sentences per Triton request


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


@dataclass
class _CandidateCache:
    size: int = 64
    entries: OrderedDict = field(default_factory=OrderedDict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, key) -> Candidates | None:
        with self.lock:
            found = self.entries.get(key)
            if found is not None:
                self.entries.move_to_end(key)
            return found

    def put(self, key, value: Candidates) -> None:
        with self.lock:
            self.entries[key] = value
            self.entries.move_to_end(key)
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)


class SimilarityService:
    #: how long a collection's change marker is trusted before the store is asked again
    MARKER_TTL = 1.0

    def __init__(self, reloader: IndexReloader, store: StoreAccess, triton_url: str | None = None, max_k: int = 1000):
        self._markers: dict[str, tuple[int, float]] = {}
        self.reloader = reloader
        self.store = store
        self.triton_url = triton_url
        self.max_k = max_k
        self._cache = _CandidateCache()
        self._triton = None
        self._tokenizer = None
        self._triton_lock = threading.Lock()

    # -- building blocks -----------------------------------------------------------------------
    def _check_k(self, k: int) -> int:
        if not 1 <= k <= self.max_k:
            raise BadRequest(f"k must be between 1 and {self.max_k}, got {k}")
        return k

    def _allowed(self, collection: str, index: LoadedIndex, conditions: list[Condition]) -> Candidates | None:
        if not conditions:
            return None
        # a repeated filter costs no store access: the candidates are cached per filter,
        # index version and change marker, and the marker is re-read at most once a second
        marker, read_at = self._markers.get(collection, (None, 0.0))
        if marker is None or time.monotonic() - read_at > self.MARKER_TTL:
            with self.store.open() as store:
                marker = store.change_marker(collection)
            self._markers[collection] = (marker, time.monotonic())
        key = (collection, index.version, canonical(conditions), marker)
        found = self._cache.get(key)
        if found is None:
            with self.store.open() as store:
                found = candidates(index, store.filter_keys(collection, conditions))
            self._cache.put(key, found)
        return found

    def _hits(self, collection: str, ranked: list[Ranked], fields: Sequence[str] | None) -> list[list[dict[str, Any]]]:
        if not fields:
            return [[{"_key": key, "score": round(score, 6)} for key, score in zip(r.keys, r.scores)] for r in ranked]
        every_key = list(dict.fromkeys(key for r in ranked for key in r.keys))
        with self.store.open() as store:
            # only the asked attributes: the vectors beside them are most of a document's bytes
            documents = dict(zip(every_key, store.get_documents(collection, every_key, attributes=list(fields))))
        out = []
        for r in ranked:
            hits = []
            for key, score in zip(r.keys, r.scores):
                document = documents.get(key)
                if document is None:  # removed from the store since the index was published
                    continue
                hits.append({"_key": key, "score": round(score, 6),
                             **{f: document.get(f) for f in fields if f not in ("_key", "score")}})
            out.append(hits)
        return out

    @staticmethod
    def _answer(collection: str, version: int, query: dict, hits: list[dict]) -> dict[str, Any]:
        return {"collection": collection, "index_version": version, "query": query, "hits": hits}

    # -- similar to stored documents ---------------------------------------------------------
    def similar(self, collection: str, key: str, k: int = 10, fields: Sequence[str] | None = None,
                filter: Any = None) -> dict[str, Any]:
        self._check_k(k)
        index = self.reloader.get(collection)
        position = index.position(key)
        if position is None:
            raise NotFound(f"'{collection}/{key}' is not in index version {index.version} of '{collection}'")
        filter = filter_object(filter)
        conditions = parse_filter(filter)
        allowed = self._allowed(collection, index, conditions)
        ranked = top_k(index, index.index.reconstruct_batch([position]), k, exclude=[position], allowed=allowed,
                       stored=True)
        query = {"key": key, "k": k} | ({"filter": filter} if conditions else {})
        return self._answer(collection, index.version, query, self._hits(collection, ranked, fields)[0])

    def similar_batch(self, collection: str, keys: Sequence[str], k: int = 10, fields: Sequence[str] | None = None,
                      filter: Any = None) -> dict[str, Any]:
        self._check_k(k)
        index = self.reloader.get(collection)
        conditions = parse_filter(filter)
        positions = [index.position(key) for key in keys]
        known = [p for p in positions if p is not None]
        allowed = self._allowed(collection, index, conditions)
        ranked = (
            iter(top_k(index, index.index.reconstruct_batch(known), k, exclude=known, allowed=allowed, stored=True))
            if known else iter(())
        )
        ranked_list = [next(ranked) if p is not None else None for p in positions]
        found = [r for r in ranked_list if r is not None]
        hits = iter(self._hits(collection, found, fields))
        results = []
        for key, r in zip(keys, ranked_list):
            if r is None:
                results.append({"key": key, "error": {
                    "status": 404, "message": f"'{collection}/{key}' is not in index version {index.version}",
                }})
            else:
                results.append({"key": key, "hits": next(hits)})
        return {"collection": collection, "index_version": index.version, "k": k, "results": results}

    # -- search by vector or text --------------------------------------------------------------
    def _vectors_of_texts(self, index: LoadedIndex, texts: Sequence[str]) -> np.ndarray:
        if not index.manifest.extra.get("text_attribute"):
            raise BadRequest(
                f"'{index.manifest.collection}' is embedded by '{index.manifest.model.get('name')}' from the graph, "
                "not from text: search it by vector"
            )
        if any(not t.strip() for t in texts):
            raise BadRequest("search texts must not be empty")
        if not self.triton_url:
            raise Unavailable("text search needs Triton: start the service with --triton-url / GRAPHSVC_TRITON_URL")
        from graphsvc.models.text import EMBEDDING, Tokenizer
        from graphsvc.triton.client import TritonClient

        with self._triton_lock:
            if self._triton is None:
                self._tokenizer = Tokenizer()
                self._triton = TritonClient(self.triton_url)
        model = index.manifest.model["name"]
        parts = [
            self._triton.infer(model, self._tokenizer.request(list(texts[i:i + TEXT_BATCH])))[EMBEDDING]
            for i in range(0, len(texts), TEXT_BATCH)
        ]
        vectors = np.concatenate([p.reshape(len(p), -1) for p in parts])
        if vectors.shape[1] != index.index.dim:
            raise Unavailable(f"model '{model}' returns {vectors.shape[1]}-d vectors "
                              f"but the index holds {index.index.dim}-d ones")
        return vectors

    def search(self, collection: str, vector: Sequence[float] | None = None, text: str | None = None, k: int = 10,
               fields: Sequence[str] | None = None, filter: Any = None) -> dict[str, Any]:
        if (vector is None) == (text is None):
            raise BadRequest("give exactly one of 'vector' and 'text'")
        answer = self.search_batch(collection, None if vector is None else [vector], None if text is None else [text],
                                   k, fields, filter)
        query = ({"text": text} if text is not None else {"vector_dim": len(vector)}) | {"k": k}
        if filter:
            query["filter"] = filter
        return self._answer(collection, answer["index_version"], query, answer["results"][0]["hits"])

    def search_batch(self, collection: str, vectors: Sequence[Sequence[float]] | None = None,
                     texts: Sequence[str] | None = None, k: int = 10, fields: Sequence[str] | None = None,
                     filter: Any = None) -> dict[str, Any]:
        self._check_k(k)
        if (vectors is None) == (texts is None):
            raise BadRequest("give exactly one of 'vectors' and 'texts'")
        index = self.reloader.get(collection)
        conditions = parse_filter(filter)
        if texts is not None:
            queries = self._vectors_of_texts(index, texts)
        else:
            if any(len(v) != index.index.dim for v in vectors):
                raise BadRequest(f"query vectors must have {index.index.dim} dimensions for '{collection}'")
            with np.errstate(over="ignore"):  # beyond float32's range becomes inf, refused as such
                queries = np.asarray(vectors, dtype=np.float32).reshape(len(vectors), index.index.dim)
        allowed = self._allowed(collection, index, conditions)
        ranked = top_k(index, queries, k, allowed=allowed)
        hits = self._hits(collection, ranked, fields)
        return {"collection": collection, "index_version": index.version, "k": k,
                "results": [{"hits": h} for h in hits]}

    def collections(self) -> list[dict[str, Any]]:
        out = []
        refused = self.reloader.refused()
        for name in self.reloader.collections():
            live = self.reloader.live().get(name)
            entry: dict[str, Any] = {"collection": name, "loaded": live is not None}
            if live is not None:
                m = live.manifest
                entry |= {"version": m.version, "count": m.count, "dim": m.dim, "metric": m.metric, "kind": m.kind,
                          "params": m.params, "model": m.model, "text_search": bool(m.extra.get("text_attribute"))}
            if name in refused:
                entry["refused"] = {"version": refused[name][0], "reason": refused[name][1]}
            out.append(entry)
        return out


__all__ = ["SimilarityService", "StoreAccess"]
