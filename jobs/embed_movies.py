"""`jobs embed-movies`: movie descriptions → sentence encoder on Triton → FAISS →
write-back → publish.

Recipe: pull `description` (or `title` where there is none) as Arrow → tokenise on the
client, sentences sorted by length so each request pads little → Triton
(`sentence_encoder`, batches of sentences, several requests in flight) → unit vectors →
FAISS index → top-k similar movies → write back `embedding`, `similar` → publish.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import pyarrow as pa

from graphsvc.graph.datasets import keys_without_text, load_texts
from graphsvc.incremental import fingerprint, text_hashes
from graphsvc.index.publish import publish_embeddings
from graphsvc.inference.texts import encode_texts
from graphsvc.runs import job_journal
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
    if config.arangodb_vector_index and skipped:
        require_vector_index(
            store, collection=config.collection, without_vector=skipped, lacking=f"'{config.text}' or "
            f"'{config.fallback_text}'", examples=lambda: keys_without_text(
                store, config.collection, config.text, config.fallback_text))
    store.release()  # the service may read the store while we compute; the write-back reopens it

    triton.wait_ready(timeout=config.ready_timeout, models=[config.model])
    model_version = triton.latest_version(config.model)
    # finished batches are journaled: a rerun on the same texts skips them
    journal = job_journal(index_dir, config.collection, "embed-movies", fingerprint(
        keys, text_hashes(texts), model_version, config.model, config.batch_size))
    with timer("embed"):
        embeddings = encode_texts(texts, partial(triton.infer_many, config.model, max_in_flight=config.max_in_flight),
                                  config.model, batch_size=config.batch_size, journal=journal,
                                  on_progress=on_progress)

    published = publish_embeddings(
        store, index_dir, config.collection, keys, embeddings, job="embed-movies",
        model={"name": config.model, "version": model_version}, top_k=config.top_k, timer=timer,
        manifest={"text_attribute": config.text}, keep=config.keep,
        arangodb_vector_index=config.arangodb_vector_index)
    journal.remove()
    return {
        "collection": config.collection,
        "embedded": len(texts),
        "skipped_without_text": skipped,
        **published.summary(),
        "sentences_per_second": round(len(texts) / timer.seconds["embed"], 1),
        "batches": {"computed": journal.computed, "reused": journal.reused},
        "seconds": timer.summary(),
    }
