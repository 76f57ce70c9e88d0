"""Similarity queries — similar to stored documents, by vector, by text — with filters and
fields, over the loaded indexes and the store: the one path both `graphsvc similar/search`
and the HTTP service answer through.

The hot path — "similar to this stored document" without fields or filters — touches
only memory: the key → id map and the vectors of the live index. The store is read
only for what a caller asks for: the `fields` of the hits (one batched lookup for all
hits of a request) and the candidates of a `filter` (one parameterised query, cached per
filter, index version and the collection's change marker).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, NamedTuple, Sequence

import numpy as np

from graphsvc.index.artifacts import LoadedIndex
from graphsvc.service.errors import BadRequest, NotFound, Unavailable
from graphsvc.service.filters import canonical, filter_object, parse_filter
from graphsvc.service.top_k import Candidates, Ranked, candidates, top_k
from graphsvc.store.base import Condition, GraphStore

MAX_K = 1000
MAX_FIELDS = 32
TEXT_BATCH = 32  # sentences per Triton request

# attributes that are the index's own input/output, not something to show beside a hit
_NOT_SHOWN_BY_DEFAULT = {"embedding", "similar", "features", "description"}
# what every hit carries already; asking for them as fields adds nothing
_HIT_ATTRIBUTES = ("_key", "score")


class ShortFields:
    """As `fields`: each hit's short scalar attributes (what the CLI shows without --fields)."""

    def __repr__(self) -> str:
        return "SHORT_FIELDS"


SHORT_FIELDS = ShortFields()


def field_names(text: str | None) -> list[str] | None:
    """The attributes of a comma-separated list (`fields=title,category`); None when empty."""
    if not text:
        return None
    names = [f.strip() for f in text.split(",") if f.strip()]
    if len(names) > MAX_FIELDS:
        raise BadRequest(f"at most {MAX_FIELDS} fields may be asked for, got {len(names)}")
    return names or None


def _short_fields(document: dict[str, Any]) -> dict[str, Any]:
    shown = {}
    for name, value in document.items():
        if name.startswith("_") or name in _NOT_SHOWN_BY_DEFAULT:
            continue
        if isinstance(value, (str, int, float, bool)) and not (isinstance(value, str) and len(value) > 80):
            shown[name] = value
        elif isinstance(value, list) and len(value) <= 5 and all(isinstance(v, str) for v in value):
            shown[name] = value
    return shown


class NotInIndex(NotFound):
    """The live index of a collection has no vector for this key."""

    def __init__(self, collection: str, key: str, version: int):
        super().__init__(f"'{collection}/{key}' is not in index version {version} of '{collection}'")
        self.collection, self.key, self.version = collection, key, version


class Hit(NamedTuple):
    key: str
    score: float
    fields: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"_key": self.key, "score": round(self.score, 6), **self.fields}


@dataclass(frozen=True)
class Answer:
    collection: str
    index_version: int
    query: dict[str, Any]
    hits: list[Hit]

    def to_dict(self) -> dict[str, Any]:
        return {"collection": self.collection, "index_version": self.index_version, "query": self.query,
                "hits": [h.to_dict() for h in self.hits]}


@dataclass(frozen=True)
class BatchAnswer:
    """One result per query; `keys` names the queries of a batch of stored documents, and
    a None in `results` is a key the index does not hold."""

    collection: str
    index_version: int
    k: int
    results: list[list[Hit] | None]
    keys: Sequence[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.keys is None:
            results = [{"hits": [h.to_dict() for h in hits]} for hits in self.results]
        else:
            results = [
                {"key": key, "hits": [h.to_dict() for h in hits]} if hits is not None else {"key": key, "error": {
                    "status": 404,
                    "message": f"'{self.collection}/{key}' is not in index version {self.index_version}",
                }}
                for key, hits in zip(self.keys, self.results)
            ]
        return {"collection": self.collection, "index_version": self.index_version, "k": self.k, "results": results}


class _CandidateCache:
    """A small LRU of filter candidates (an OrderedDict: functools.lru_cache cannot take
    the store and index the entries are computed from)."""

    def __init__(self, size: int = 64):
        self.size = size
        self.entries: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

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


class SimilarityQueries:
    """Answers queries over `index_of(collection)` (the live index: the service's reloader,
    or the published one loaded by the CLI) and the store `open_store()` yields.

    Errors are `graphsvc.service.errors` with the HTTP status they answer with: a bad k,
    filter, vector or text is BadRequest, a key the index lacks NotInIndex, a store or
    Triton that is not there Unavailable."""

    #: how long a collection's change marker is trusted before the store is asked again
    MARKER_TTL = 1.0

    def __init__(self, index_of: Callable[[str], LoadedIndex], open_store: Callable[[], ContextManager[GraphStore]],
                 triton_url: str | None = None, max_k: int = MAX_K):
        self.index_of = index_of
        self.open_store = open_store
        self.triton_url = triton_url
        self.max_k = max_k
        self._markers: dict[str, tuple[int, float]] = {}
        self._cache = _CandidateCache()
        self._triton = None
        self._tokenizer = None
        self._triton_lock = threading.Lock()

    def close(self) -> None:
        with self._triton_lock:
            if self._triton is not None:
                self._triton.close()
                self._triton = None

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
            with self.open_store() as store:
                marker = store.change_marker(collection)
            self._markers[collection] = (marker, time.monotonic())
        key = (collection, index.manifest.collection, index.version, canonical(conditions), marker)
        found = self._cache.get(key)
        if found is None:
            with self.open_store() as store:
                found = candidates(index, store.filter_keys(collection, conditions))
            self._cache.put(key, found)
        return found

    def _hits(self, collection: str, ranked: list[Ranked], fields: Sequence[str] | ShortFields | None,
              keep_missing: bool = False) -> list[list[Hit]]:
        """Hits with their `fields`; a hit whose document is gone is dropped, or kept
        without fields with `keep_missing` (recommended movies whose documents were never
        restored, as in the workshop's dump)."""
        if not fields:
            return [[Hit(key, score, {}) for key, score in zip(r.keys, r.scores)] for r in ranked]
        short = isinstance(fields, ShortFields)
        every_key = list(dict.fromkeys(key for r in ranked for key in r.keys))
        with self.open_store() as store:
            # only the asked attributes: the vectors beside them are most of a document's bytes
            documents = dict(zip(every_key, store.get_documents(
                collection, every_key, attributes=None if short else list(fields))))
        out = []
        for r in ranked:
            hits = []
            for key, score in zip(r.keys, r.scores):
                document = documents.get(key)
                if document is None:  # removed from the store since the index was published
                    if keep_missing:
                        hits.append(Hit(key, score, {}))
                    continue
                shown = _short_fields(document) if short else {
                    f: document.get(f) for f in fields if f not in _HIT_ATTRIBUTES}
                hits.append(Hit(key, score, shown))
            out.append(hits)
        return out

    @staticmethod
    def _position(index: LoadedIndex, collection: str, key: str) -> int:
        position = index.position(key)
        if position is None:
            raise NotInIndex(collection, key, index.version)
        return position

    # -- similar to stored documents ---------------------------------------------------------
    def stored_vector(self, collection: str, key: str) -> np.ndarray:
        """The vector the live index holds for `key` (NotInIndex when it holds none)."""
        index = self.index_of(collection)
        return index.index.reconstruct_batch([self._position(index, collection, key)])[0]

    def similar(self, collection: str, key: str, k: int = 10, fields: Sequence[str] | ShortFields | None = None,
                filter: Any = None) -> Answer:
        """The k documents closest to the stored document `key`, itself left out."""
        self._check_k(k)
        index = self.index_of(collection)
        position = self._position(index, collection, key)
        filter = filter_object(filter)
        conditions = parse_filter(filter)
        allowed = self._allowed(collection, index, conditions)
        ranked = top_k(index, index.index.reconstruct_batch([position]), k, exclude=[position], allowed=allowed,
                       stored=True)
        query = {"key": key, "k": k} | ({"filter": filter} if conditions else {})
        return Answer(collection, index.version, query, self._hits(collection, ranked, fields)[0])

    def similar_batch(self, collection: str, keys: Sequence[str], k: int = 10,
                      fields: Sequence[str] | ShortFields | None = None, filter: Any = None) -> BatchAnswer:
        self._check_k(k)
        index = self.index_of(collection)
        conditions = parse_filter(filter)
        positions = [index.position(key) for key in keys]
        known = [p for p in positions if p is not None]
        allowed = self._allowed(collection, index, conditions)
        ranked = (
            top_k(index, index.index.reconstruct_batch(known), k, exclude=known, allowed=allowed, stored=True)
            if known else []
        )
        hits = iter(self._hits(collection, ranked, fields))
        return BatchAnswer(collection, index.version, k, [next(hits) if p is not None else None for p in positions],
                           keys=list(keys))

    # -- recommendations for a user ---------------------------------------------------------
    def recommend(self, users: str, key: str, k: int = 10, fields: Sequence[str] | ShortFields | None = None,
                  filter: Any = None):
        """The k movies the user `users/key` has not rated that the published
        recommendations rank first (`graphsvc.service.recommendations`)."""
        from graphsvc.service.recommendations import recommend

        return recommend(self, users, key, k, fields, filter)

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

    def text_vector(self, collection: str, text: str) -> np.ndarray:
        """`text` embedded by the model that embedded `collection`'s text space (on Triton)."""
        return self._vectors_of_texts(self._text_space(self.index_of(collection)), [text])[0]

    def _text_space(self, index: LoadedIndex) -> LoadedIndex:
        """The index a text query searches: a graph-aware collection's vectors are not in the
        space of a text (a text has no graph), so its embed job publishes the text vectors
        as their own index, named in the manifest's `text_index`."""
        name = index.manifest.extra.get("text_index")
        return self.index_of(name) if name else index

    def search(self, collection: str, vector: Sequence[float] | None = None, text: str | None = None, k: int = 10,
               fields: Sequence[str] | ShortFields | None = None, filter: Any = None) -> Answer:
        """The k documents closest to one vector or one text."""
        if (vector is None) == (text is None):
            raise BadRequest("give exactly one of 'vector' and 'text'")
        filter = filter_object(filter)
        answer = self.search_batch(collection, None if vector is None else [vector], None if text is None else [text],
                                   k, fields, filter)
        query = ({"text": text} if text is not None else {"vector_dim": len(vector)}) | {"k": k}
        if filter:
            query["filter"] = filter
        return Answer(collection, answer.index_version, query, answer.results[0])

    def search_batch(self, collection: str, vectors: Sequence[Sequence[float]] | None = None,
                     texts: Sequence[str] | None = None, k: int = 10,
                     fields: Sequence[str] | ShortFields | None = None, filter: Any = None) -> BatchAnswer:
        self._check_k(k)
        if (vectors is None) == (texts is None):
            raise BadRequest("give exactly one of 'vectors' and 'texts'")
        index = self.index_of(collection)
        conditions = parse_filter(filter)
        if texts is not None:
            index = self._text_space(index)
            queries = self._vectors_of_texts(index, texts)
        else:
            if any(len(v) != index.index.dim for v in vectors):
                raise BadRequest(f"query vectors must have {index.index.dim} dimensions for '{collection}'")
            with np.errstate(over="ignore"):  # beyond float32's range becomes inf, refused as such
                queries = np.asarray(vectors, dtype=np.float32).reshape(len(vectors), index.index.dim)
        allowed = self._allowed(collection, index, conditions)
        ranked = top_k(index, queries, k, allowed=allowed)
        return BatchAnswer(collection, index.version, k, self._hits(collection, ranked, fields))


__all__ = ["MAX_FIELDS", "MAX_K", "SHORT_FIELDS", "Answer", "BatchAnswer", "Hit", "NotInIndex", "SimilarityQueries",
           "field_names"]
