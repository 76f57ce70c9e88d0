"""Similarity queries answered from the published index plus the store.

Results are `_key` + `score` (what an AQL query joins with documents), plus the
document fields the caller asks for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from graphsvc.errors import DocumentNotFound, GraphsvcError
from graphsvc.index.artifacts import LoadedIndex, load_current
from graphsvc.models.text import EMBEDDING, Tokenizer
from graphsvc.store.base import GraphStore
from graphsvc.triton.client import TritonClient

# attributes that are the index's own input/output, not something to show beside a hit
_NOT_SHOWN_BY_DEFAULT = {"embedding", "similar", "features", "description"}


@dataclass(frozen=True)
class Hit:
    key: str
    score: float
    fields: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"_key": self.key, "score": round(self.score, 6), **self.fields}


@dataclass(frozen=True)
class Answer:
    collection: str
    index_version: int
    hits: list[Hit]
    query: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "index_version": self.index_version,
            "query": self.query,
            "hits": [h.to_dict() for h in self.hits],
        }


def _default_fields(document: dict[str, Any]) -> dict[str, Any]:
    shown = {}
    for name, value in document.items():
        if name.startswith("_") or name in _NOT_SHOWN_BY_DEFAULT:
            continue
        if isinstance(value, (str, int, float, bool)) and not (isinstance(value, str) and len(value) > 80):
            shown[name] = value
        elif isinstance(value, list) and len(value) <= 5 and all(isinstance(v, str) for v in value):
            shown[name] = value
    return shown


def _with_fields(
    store: GraphStore, collection: str, keys: Sequence[str], scores: Sequence[float], fields: Sequence[str] | None
) -> list[Hit]:
    documents = store.get_documents(collection, list(keys))
    hits = []
    for key, score, document in zip(keys, scores, documents):
        if document is None:  # removed from the store since the index was published
            continue
        chosen = _default_fields(document) if fields is None else {f: document.get(f) for f in fields}
        hits.append(Hit(key, float(score), chosen))
    return hits


def _search(index: LoadedIndex, vector: np.ndarray, k: int, exclude: str | None = None,
            allowed=None) -> tuple[list[str], list[float]]:
    if allowed is not None:  # a filter: the service's top-k, which still finds k matching hits
        from graphsvc.service.search import top_k

        own = index.position(exclude) if exclude is not None else None
        ranked = top_k(index, vector, k, exclude=[own], allowed=allowed)[0]
        return ranked.keys, ranked.scores
    wanted = min(k + (1 if exclude else 0), index.index.count)
    scores, ids = index.index.search(vector, wanted)
    keys, kept = [], []
    for key, score in zip(index.key_at(ids[0]), scores[0]):
        if key is None or key == exclude:
            continue
        keys.append(key)
        kept.append(float(score))
    return keys[:k], kept[:k]


def _allowed(store: GraphStore, index: LoadedIndex, collection: str, filter: Any):
    """The candidates a structured filter allows (None without a filter)."""
    from graphsvc.service.filters import parse_filter
    from graphsvc.service.search import candidates

    conditions = parse_filter(filter)
    return candidates(index, store.filter_keys(collection, conditions)) if conditions else None


def similar_to_key(
    store: GraphStore,
    index_dir: Path,
    collection: str,
    key: str,
    k: int = 10,
    fields: Sequence[str] | None = None,
    filter: Any = None,
) -> Answer:
    index = load_current(index_dir, collection)
    position = index.position(key)
    if position is None:
        if store.get_documents(collection, [key])[0] is None:
            raise DocumentNotFound(collection, key)
        raise GraphsvcError(
            f"'{collection}/{key}' is not in index version {index.version} — "
            f"rerun 'jobs embed-{collection}' to include it"
        )
    vector = index.index.reconstruct_batch([position])
    keys, scores = _search(index, vector, k, exclude=key, allowed=_allowed(store, index, collection, filter))
    return Answer(collection, index.version, _with_fields(store, collection, keys, scores, fields),
                  {"key": key, "k": k})


def search_by_text(
    store: GraphStore,
    index_dir: Path,
    triton: TritonClient,
    collection: str,
    text: str,
    k: int = 10,
    fields: Sequence[str] | None = None,
    filter: Any = None,
) -> Answer:
    if not text.strip():
        raise GraphsvcError("the search text is empty")
    index = load_current(index_dir, collection)
    model = index.manifest.model["name"]
    vector = triton.infer(model, Tokenizer().request([text]))[EMBEDDING]
    if vector.shape[-1] != index.index.dim:
        raise GraphsvcError(
            f"model '{model}' returns {vector.shape[-1]}-d vectors "
            f"but the '{collection}' index holds {index.index.dim}-d ones"
        )
    keys, scores = _search(index, vector.reshape(1, -1), k, allowed=_allowed(store, index, collection, filter))
    return Answer(collection, index.version, _with_fields(store, collection, keys, scores, fields),
                  {"text": text, "k": k})
