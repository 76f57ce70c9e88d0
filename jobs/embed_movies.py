"""`jobs embed-movies`: movie descriptions → sentence encoder on Triton → FAISS →
write-back → publish.

Recipe: pull `description` (or `title` where there is none) as Arrow → tokenise on the
client, sentences sorted by length so each request pads little → Triton
(`sentence_encoder`, batches of sentences, several requests in flight) → unit vectors →
FAISS index → top-k similar movies → write back `embedding`, `similar` → publish.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa

from graphsvc.errors import TritonInferenceError
from graphsvc.graph.datasets import load_texts
from graphsvc.incremental import fingerprint, text_hashes
from graphsvc.index.artifacts import publish
from graphsvc.index.similar import embedding_array, index_with_neighbours, similar_array
from graphsvc.models.text import EMBEDDING, Tokenizer
from graphsvc.runs import RunJournal, job_journal, kill_point
from graphsvc.runs.timing import PhaseTimer
from graphsvc.store import require_vector_index
from graphsvc.store.base import GraphStore
from graphsvc.triton.client import TritonClient


@dataclass(frozen=True)
class EmbedMoviesConfig:
    collection: str = "movies"
    text: str = "description"
    fallback_text: str = "title"
    model: str = "sentence_encoder"
    top_k: int = 10
    batch_size: int = 64
    max_in_flight: int = 2
    keep: int = 3
    ready_timeout: float = 10.0
    arangodb_vector_index: bool = False


def pull_texts(store: GraphStore, config: EmbedMoviesConfig) -> tuple[pa.Array, list[str], int]:
    """Keys and texts of the documents that have one; the count of those skipped."""
    return load_texts(store, config.collection, config.text, config.fallback_text)


def embed_movies(
    store: GraphStore,
    triton: TritonClient,
    index_dir: Path,
    config: EmbedMoviesConfig = EmbedMoviesConfig(),
    on_progress: Callable[[int], None] | None = None,
) -> dict:
    timer = PhaseTimer()
    if config.arangodb_vector_index:
        require_vector_index(store)  # before hours of work, not after
    with timer("pull"):
        keys, texts, skipped = pull_texts(store, config)
    store.release()  # the service may read the store while we compute; the write-back reopens it

    triton.wait_ready(timeout=config.ready_timeout, models=[config.model])
    model_version = triton.latest_version(config.model)
    # finished batches are journaled: a rerun on the same texts skips them
    journal = job_journal(index_dir, config.collection, "embed-movies", fingerprint(
        keys, text_hashes(texts), model_version, config.model, config.batch_size))
    with timer("embed"):
        embeddings = _embed(texts, triton, config, on_progress, journal)

    with timer("index"):
        indexed = index_with_neighbours(embeddings, config.top_k)
        index, calibration = indexed.index, indexed.calibration
        similar = similar_array(keys, indexed.ids, indexed.scores)

    with timer("write_back"):
        store.update_attributes(
            config.collection,
            pa.table({"_key": keys, "embedding": embedding_array(embeddings), "similar": similar}),
        )

    vector_index = None
    if config.arangodb_vector_index:
        with timer("vector_index"):
            vector_index = store.create_vector_index(config.collection, dimension=int(embeddings.shape[1])).status

    with timer("publish"):
        manifest = publish(
            index_dir,
            config.collection,
            index,
            keys,
            model={"name": config.model, "version": model_version},
            extra={"job": "embed-movies", "top_k": config.top_k, "calibration": calibration,
                   "text_attribute": config.text},
            keep=config.keep,
        )
    journal.remove()
    return {
        "collection": config.collection,
        "embedded": len(texts),
        "skipped_without_text": skipped,
        "dimension": int(embeddings.shape[1]),
        "index_version": manifest.version,
        "index_kind": index.kind,
        "index_recall_at_k": calibration["recall_at_k"],
        "similar": indexed.report,  # how the similar lists were found, and their measured recall@k
        "arangodb_vector_index": vector_index,
        "sentences_per_second": round(len(texts) / timer.seconds["embed"], 1),
        "batches": {"computed": journal.computed, "reused": journal.reused},
        "seconds": timer.summary(),
    }


def _embed(texts: list[str], triton: TritonClient, config: EmbedMoviesConfig,
           on_progress: Callable[[int], None] | None, journal: RunJournal | None = None) -> np.ndarray:
    """Unit vectors [N, d] from Triton, in the order of `texts`."""
    tokenizer = Tokenizer()
    # length-sorted batches: each request pads only to its own longest sentence
    order = np.argsort(tokenizer.lengths(texts), kind="stable")
    batches = [order[s : s + config.batch_size] for s in range(0, len(order), config.batch_size)]

    saved = [journal.load(f"T-B{b}") if journal else None for b in range(len(batches))]
    todo = [b for b, vectors in enumerate(saved) if vectors is None]

    def requests() -> Iterator[dict]:
        for b in todo:
            yield tokenizer.request([texts[i] for i in batches[b]])

    for b, result in zip(todo, triton.infer_many(config.model, requests(), max_in_flight=config.max_in_flight)):
        saved[b] = result[EMBEDDING]
        if journal:
            journal.save(f"T-B{b}", saved[b])
            kill_point("embed", journal.computed)
        if on_progress:
            on_progress(len(batches[b]))

    embeddings = None
    for rows, vectors in zip(batches, saved):
        if vectors.shape[0] != len(rows):
            raise TritonInferenceError(
                f"model '{config.model}' returned {vectors.shape[0]} vectors for {len(rows)} texts"
            )
        if embeddings is None:
            embeddings = np.zeros((len(texts), vectors.shape[1]), np.float32)
        embeddings[rows] = vectors
    return embeddings
