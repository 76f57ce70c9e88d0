"""`jobs embed-movies`: movie descriptions → sentence encoder on Triton → FAISS →
write-back → publish.

Recipe: pull `description` (or `title` where there is none) as Arrow → tokenise on the
client, sentences sorted by length so each request pads little → Triton
(`sentence_encoder`, batches of sentences, several requests in flight) → unit vectors →
FAISS index → top-k similar movies → write back `embedding`, `similar` → publish.

`executor="ray"`: the sentences go through Ray Data's `map_batches` over a pool of
actors, one Triton client each (`graphsvc.distributed.texts`; the length-sorted texts
in blocks, each journaled as `RT-B{b}`, so a rerun encodes only the missing ones), and the write-back
through Parquet shards written by Ray tasks (`graphsvc.distributed.publish`).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa

from graphsvc.distributed.cluster import ray_session
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
    executor: str = "local"  # or "ray"
    ray_address: str | None = None  # None: a Ray started on this machine for the job
    partitions: int = 0  # Ray: blocks of texts and write-back shards (0: two per actor)
    ray_actors: int = 2  # Ray: actors calling Triton, one client each


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
    on_ray, write_back = config.executor == "ray", None
    with ray_session(config.ray_address) if on_ray else nullcontext():
        with timer("embed"):
            if on_ray:  # blocks journaled as RT-B{b}: a rerun encodes only those not saved
                from graphsvc.distributed.texts import encode_texts_on_ray

                embeddings = encode_texts_on_ray(texts, triton.url, config.model, batch_size=config.batch_size,
                                                 max_in_flight=config.max_in_flight, actors=config.ray_actors,
                                                 blocks=config.partitions, journal=journal,
                                                 on_progress=on_progress)
            else:
                embeddings = encode_texts(texts, partial(triton.infer_many, config.model,
                                                         max_in_flight=config.max_in_flight),
                                          config.model, batch_size=config.batch_size, journal=journal,
                                          on_progress=on_progress)
        extra = {}
        if on_ray:
            from graphsvc.distributed.publish import Shard, index_on_ray, ray_write_back

            shards = max(config.partitions or 2 * config.ray_actors, 1)
            bounds = [len(texts) * s // shards for s in range(shards + 1)]
            write_back = ray_write_back(store, journal, keys, [
                Shard(np.arange(start, stop), embeddings[start:stop])
                for start, stop in zip(bounds, bounds[1:]) if stop > start])
            extra = {"index": index_on_ray(shards), "write_back": write_back}
        published = publish_embeddings(
            store, index_dir, config.collection, keys, embeddings, job="embed-movies",
            model={"name": config.model, "version": model_version}, top_k=config.top_k, timer=timer,
            manifest={"text_attribute": config.text}, keep=config.keep,
            arangodb_vector_index=config.arangodb_vector_index, **extra)
    journal.remove()
    return {
        "collection": config.collection,
        "embedded": len(texts),
        "skipped_without_text": skipped,
        **published.summary(),
        "sentences_per_second": round(len(texts) / timer.seconds["embed"], 1),
        "batches": {"computed": journal.computed, "reused": journal.reused},
        "executor": config.executor,
        **({"ray": {"actors": config.ray_actors, "write_back": write_back.report}} if on_ray else {}),
        "seconds": timer.summary(),
    }
