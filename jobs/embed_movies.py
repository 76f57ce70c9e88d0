"""`jobs embed-movies`: movie descriptions → sentence encoder on Triton → FAISS →
write-back → publish.

Recipe: pull `description` (or `title` where there is none) as Arrow → tokenise on the
client, sentences sorted by length so each request pads little → Triton
(`sentence_encoder`, batches of sentences, several requests in flight) → unit vectors →
FAISS index → top-k similar movies → write back `embedding`, `similar` → publish.

`executor="ray"`: the texts are pulled by a Ray read task per key range
(`graphsvc.distributed.pull`: the same keys, texts and count skipped as the local pull,
in key order), the sentences go through Ray Data's `map_batches` over a pool of
actors, one Triton client each (`graphsvc.distributed.texts`; the length-sorted texts
in blocks, each journaled as `RT-B{b}`, so a rerun encodes only the missing ones), and the write-back
through Parquet shards written by Ray tasks (`graphsvc.distributed.publish`).

`embedding="graph"` (the default `"auto"` picks it when Triton serves the graph-aware
movie model, `movie_graph_layer0…`, and the catalogue has edges of its relations — the
relations are the layer models' config parameter `relations`, e.g. directed_by and
acted_in; never has_genre): after the text vectors, the model's layers run layer-wise
through Triton (`graphsvc.inference.relational`: the client computes each movie's
relation means, Triton applies the layer; journaled `L{l}-B{b}`). Written back:
`embedding` (the graph-aware vector), `text_embedding` and `similar` (by the graph-aware
vectors). Published: the text vectors as their own index `<collection>.text` first, then
the graph-aware index of `<collection>` whose manifest names it (`text_index`), so a text
search (a text has no graph) stays in the text space while `similar` uses the graph.
On Ray the graph layers run as GraphSAGE's do (`graphsvc.distributed.relational`): the
movies in partitions whose halos are the movies their relation means read, each layer's
input shuffled (halo rows) or broadcast (when it fits the object store, as a movie
catalogue's does), an actor pool calling Triton, partitions journaled as `L{l}-P{p}`.
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
from graphsvc.errors import ConfigError
from graphsvc.graph.datasets import keys_without_text, load_memberships, load_texts
from graphsvc.graph.relations import MovieRelations
from graphsvc.incremental import fingerprint, text_hashes
from graphsvc.index.artifacts import publish
from graphsvc.index.faiss_index import VectorIndex
from graphsvc.index.publish import publish_embeddings
from graphsvc.index.similar import embedding_array
from graphsvc.inference.relational import run_movie_layers, served_movie_model
from graphsvc.inference.runners import TritonLayers, layer_models
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
    partitions: int = 0  # Ray: blocks of texts, graph layers' movie partitions, write-back shards (0: two per actor)
    ray_actors: int = 2  # Ray: actors calling Triton, one client each
    embedding: str = "auto"  # "text", "graph", or "auto": graph when Triton serves it and the catalogue has its edges
    graph_model: str = "movie_graph"  # Triton: <graph_model>_layer0, _layer1, …
    layer_batch_size: int = 16_384  # movies per layer request
    ray_order: str = "bfs"  # Ray, graph-aware: the movie order partitions are ranges of (bfs or key)
    ray_broadcast: bool | None = None  # Ray, graph-aware: force how layers reach the partitions (None: by size)

    @property
    def text_index(self) -> str:
        """Where a graph-aware run publishes the text vectors' index."""
        return f"{self.collection}.text"


@dataclass(frozen=True)
class GraphPlan:
    """The graph-aware model as Triton serves it, and the catalogue's edges for it."""

    models: list[str]
    versions: list[str]
    relations: MovieRelations
    links: dict[str, int]  # edges per relation


def plan_graph(store: GraphStore, triton: TritonClient, keys: pa.Array, config: EmbedMoviesConfig) -> GraphPlan | None:
    """The graph-aware plan, or None where `auto` falls back to text (no served model,
    no edges of its relations); `graph` asked explicitly says why it cannot run."""
    if config.embedding == "text":
        return None
    if config.embedding not in ("graph", "auto"):
        raise ConfigError(f"--model must be text, graph or auto, got '{config.embedding}'")
    served = served_movie_model(triton, config.graph_model)
    if served is None:
        if config.embedding == "auto":
            return None
        layer_models(triton, config.graph_model, hint="train one with 'jobs train-movies'")  # raises, saying what to do
    models, names = served
    memberships = load_memberships(store, config.collection, keys, names)
    links = {name: int(len(m.movies)) for name, m in memberships.items()}
    if not sum(links.values()):
        if config.embedding == "auto":
            return None
        raise ConfigError(f"'{config.collection}' has no edges in {', '.join(names)}: nothing for the graph-aware "
                          "model to use — embed with --model text")
    triton.wait_ready(timeout=config.ready_timeout, models=models)
    return GraphPlan(models, [triton.latest_version(m) for m in models],
                     MovieRelations.build(names, memberships, len(keys)), links)


def pull_texts(store: GraphStore, config: EmbedMoviesConfig) -> tuple[tuple[pa.Array, list[str], int], dict | None]:
    """Keys and texts of the documents that have one and the count of those skipped; and,
    on Ray, what the pull did (a read task per key range: the texts in key order)."""
    if config.executor == "ray":
        from graphsvc.distributed.pull import pull_texts_on_ray

        return pull_texts_on_ray(store, config.collection, config.text, config.fallback_text)
    return load_texts(store, config.collection, config.text, config.fallback_text), None


def embed_movies(
    store: GraphStore,
    triton: TritonClient,
    index_dir: Path,
    config: EmbedMoviesConfig = EmbedMoviesConfig(),
    on_progress: Callable[[int], None] | None = None,
) -> dict:
    # on Ray the pull's read tasks run on the cluster too: joined before the pull
    with ray_session(config.ray_address) if config.executor == "ray" else nullcontext():
        return _embed_movies(store, triton, index_dir, config, on_progress)


def _embed_movies(store: GraphStore, triton: TritonClient, index_dir: Path, config: EmbedMoviesConfig,
                  on_progress: Callable[[int], None] | None) -> dict:
    timer = PhaseTimer()
    if config.arangodb_vector_index:
        require_vector_index(store)  # before hours of work, not after
    with timer("pull"):
        (keys, texts, skipped), pull_report = pull_texts(store, config)
    if config.arangodb_vector_index and skipped:
        require_vector_index(
            store, collection=config.collection, without_vector=skipped, lacking=f"'{config.text}' or "
            f"'{config.fallback_text}'", examples=lambda: keys_without_text(
                store, config.collection, config.text, config.fallback_text))
    store.release()  # the service may read the store while we compute; the write-back reopens it

    triton.wait_ready(timeout=config.ready_timeout, models=[config.model])
    model_version = triton.latest_version(config.model)
    with timer("pull"):
        graph = plan_graph(store, triton, keys, config)  # reads the edges to people when graph-aware
    store.release()
    on_ray, write_back = config.executor == "ray", None
    # finished batches are journaled: a rerun on the same texts (and graph) skips them
    journal = job_journal(index_dir, config.collection, "embed-movies", fingerprint(
        keys, text_hashes(texts), model_version, config.model, config.batch_size,
        *([graph.models, graph.versions, graph.relations.row_hashes(), config.layer_batch_size] if graph else []),
        # on Ray a journaled partition holds the rows its partitioning gave it
        *([config.executor, graph_partitions(len(texts), config), config.ray_order] if graph and on_ray else [])))
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
    graph_report, ray_partitions = None, {"computed": 0, "reused": 0}
    if graph is not None:
        with timer("graph"):
            text_embeddings = embeddings
            if on_ray:
                from graphsvc.distributed.relational import embed_movie_layers_on_ray

                layers = embed_movie_layers_on_ray(
                    graph.relations, text_embeddings, triton.url, graph.models,
                    partitions=graph_partitions(len(texts), config), actors=config.ray_actors,
                    batch_size=config.layer_batch_size, max_in_flight=config.max_in_flight, order=config.ray_order,
                    broadcast=config.ray_broadcast, journal=journal, on_progress=on_progress)
                embeddings = layers.last_layer
                graph_report = layers.summary(len(texts))
                ray_partitions = {"computed": layers.computed, "reused": layers.reused}
            else:
                runner = TritonLayers(triton, graph.models, config.max_in_flight)
                embeddings = run_movie_layers(runner, graph.relations, text_embeddings,
                                              batch_size=config.layer_batch_size, journal=journal,
                                              on_progress=on_progress)[-1]
        with timer("text_index"):
            text_index = _publish_text_index(index_dir, keys, text_embeddings, config, model_version)
    extra = {}
    if on_ray:
        from graphsvc.distributed.publish import Shard, index_on_ray, ray_write_back

        shards = max(config.partitions or 2 * config.ray_actors, 1)
        bounds = [len(texts) * s // shards for s in range(shards + 1)]
        write_back = ray_write_back(store, journal, keys, [
            Shard(np.arange(start, stop), embeddings[start:stop],
                  columns={"text_embedding": text_embeddings[start:stop]} if graph is not None else {})
            for start, stop in zip(bounds, bounds[1:]) if stop > start])
        extra = {"index": index_on_ray(shards), "write_back": write_back}
    if graph is not None:
        if not on_ray:  # on Ray the shards carry it
            extra["columns"] = {"text_embedding": embedding_array(text_embeddings)}
        model = {"name": config.graph_model, "version": graph.versions[-1], "layers": graph.models,
                 "relations": list(graph.relations.names), "text_model": {"name": config.model,
                                                                         "version": model_version}}
        manifest = {"space": "graph", "text_index": config.text_index, "text_index_version": text_index.version,
                    "relations": graph.links}
    else:
        model = {"name": config.model, "version": model_version}
        manifest = {"text_attribute": config.text}
    published = publish_embeddings(
        store, index_dir, config.collection, keys, embeddings, job="embed-movies",
        model=model, top_k=config.top_k, timer=timer, manifest=manifest, keep=config.keep,
        arangodb_vector_index=config.arangodb_vector_index, **extra)
    journal.remove()
    return {
        "collection": config.collection,
        "embedded": len(texts),
        "skipped_without_text": skipped,
        **published.summary(),
        "sentences_per_second": round(len(texts) / timer.seconds["embed"], 1),
        "embedding": "graph" if graph else "text",
        **({"graph": {"models": graph.models, "relations": graph.links, "text_index": config.text_index,
                      "text_index_version": text_index.version,
                      "movies_per_second": round(len(texts) / max(timer.seconds["graph"], 1e-9), 1)}}
           if graph else {}),
        # text blocks and batches, and on Ray the graph layers' partitions (journaled by the workers)
        "batches": {"computed": journal.computed + ray_partitions["computed"],
                    "reused": journal.reused + ray_partitions["reused"]},
        "executor": config.executor,
        **({"ray": {"actors": config.ray_actors, "pull": pull_report, "write_back": write_back.report,
                    **({"graph": graph_report} if graph_report else {})}}
           if on_ray else {}),
        "seconds": timer.summary(),
    }


def graph_partitions(movies: int, config: EmbedMoviesConfig) -> int:
    """The graph layers' partitions on Ray: `partitions`, else two per actor (and one per
    million movies)."""
    from graphsvc.distributed.partitions import default_partitions

    return config.partitions or default_partitions(movies, config.ray_actors)


def _publish_text_index(index_dir: Path, keys: pa.Array, vectors: np.ndarray, config: EmbedMoviesConfig,
                        model_version: str):
    """The text vectors as the index `<collection>.text`, searched by text queries."""
    index = VectorIndex.build(vectors, metric="cosine")
    calibration = index.calibrate_nprobe(k=config.top_k)
    return publish(index_dir, config.text_index, index, keys, model={"name": config.model, "version": model_version},
                   extra={"job": "embed-movies", "space": "text", "text_attribute": config.text,
                          "of_collection": config.collection, "calibration": calibration}, keep=config.keep)
