"""`jobs embed-products`: product graph → GraphSAGE on Triton → FAISS → write-back → publish.

Recipe: pull products + co-purchase edges as Arrow → CSR → layer-wise inference: per
layer, neighbour means for all nodes, then Triton (`graphsage_layerN`, large batches,
several requests in flight) applies the layer (or, `--mode sampled`, one sampled
computation graph per batch of targets through `graphsage`) → embeddings + predicted
categories → FAISS index → top-k similar products → write back `embedding`, `similar`,
`predicted_category` → publish the index.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa

from graphsvc.errors import ConfigError, ModelRepositoryError, TritonInferenceError
from graphsvc.graph import NeighbourMean, NeighbourSampler
from graphsvc.graph.datasets import NodeGraph, load_node_graph
from graphsvc.incremental import fingerprint, row_hashes
from graphsvc.index.artifacts import publish
from graphsvc.index.similar import embedding_array, index_with_neighbours, similar_array
from graphsvc.models.graphsage import (
    EMBEDDING,
    LAYER_NEIGHBOURS,
    LAYER_OUT,
    LAYER_SELF,
    LOGITS,
    layer_model_name,
    subgraph_request,
)
from graphsvc.runs import RunJournal, job_journal, kill_point
from graphsvc.runs.timing import PhaseTimer
from graphsvc.store import require_vector_index
from graphsvc.store.base import GraphStore
from graphsvc.triton.client import TritonClient


@dataclass(frozen=True)
class EmbedProductsConfig:
    nodes: str = "products"
    edges: str = "bought_together"
    features: str = "features"
    model: str = "graphsage"
    top_k: int = 10
    batch_size: int = 512
    mode: str = "layerwise"  # or "sampled": one sampled computation graph per batch of targets
    fanouts: tuple[int, ...] = (15, 10, 5)  # sampled mode only
    layer_batch_size: int = 16_384  # nodes per request in layer-wise mode
    max_in_flight: int = 2
    seed: int = 0
    keep: int = 3
    ready_timeout: float = 10.0
    arangodb_vector_index: bool = False


def embed_products(
    store: GraphStore,
    triton: TritonClient,
    index_dir: Path,
    config: EmbedProductsConfig = EmbedProductsConfig(),
    on_progress: Callable[[int], None] | None = None,
) -> dict:
    timer = PhaseTimer()
    if config.arangodb_vector_index:
        require_vector_index(store)  # before hours of work, not after
    with timer("pull"):
        data = load_node_graph(store, config.nodes, config.edges, config.features)
    store.release()  # the service may read the store while we compute; the write-back reopens it

    if config.mode not in ("layerwise", "sampled"):
        raise ConfigError(f"unknown embedding mode '{config.mode}' (layerwise or sampled)")
    models = _layer_models(triton, config) if config.mode == "layerwise" else [config.model]
    triton.wait_ready(timeout=config.ready_timeout, models=models)
    model_version = triton.latest_version(models[0])
    # finished batches are journaled: a rerun on the same inputs skips them
    journal = job_journal(index_dir, config.nodes, "embed-products", fingerprint(
        data.keys, row_hashes(data.features), data.graph.indptr, data.graph.indices, model_version,
        config.model, config.mode, config.layer_batch_size, config.batch_size, list(config.fanouts), config.seed))
    with timer("embed"):
        if config.mode == "layerwise":
            embeddings, predicted = _embed_layerwise(data, triton, models, config, on_progress, journal)
        else:
            embeddings, predicted = _embed(data, triton, config, on_progress, journal)

    with timer("index"):
        indexed = index_with_neighbours(embeddings, config.top_k)
        index, calibration = indexed.index, indexed.calibration
        similar = similar_array(data.keys, indexed.ids, indexed.scores)

    with timer("write_back"):
        store.update_attributes(
            config.nodes,
            pa.table(
                {
                    "_key": data.keys,
                    "embedding": embedding_array(embeddings),
                    "similar": similar,
                    "predicted_category": pa.array(predicted),
                }
            ),
        )

    vector_index = None
    if config.arangodb_vector_index:
        with timer("vector_index"):
            vector_index = store.create_vector_index(config.nodes, dimension=int(embeddings.shape[1])).status

    with timer("publish"):
        manifest = publish(
            index_dir,
            config.nodes,
            index,
            data.keys,
            model={"name": config.model, "version": model_version},
            extra={"job": "embed-products", "top_k": config.top_k, "calibration": calibration, "mode": config.mode,
               "fanouts": list(config.fanouts) if config.mode == "sampled" else None},
            keep=config.keep,
        )
    journal.remove()
    return {
        "collection": config.nodes,
        "embedded": len(data.keys),
        "edges": int(data.graph.num_edges // 2),
        "dangling_edges": data.dangling_edges,
        "dimension": int(embeddings.shape[1]),
        "index_version": manifest.version,
        "index_kind": index.kind,
        "index_recall_at_k": calibration["recall_at_k"],
        "similar": indexed.report,  # how the similar lists were found, and their measured recall@k
        "arangodb_vector_index": vector_index,
        "nodes_per_second": round(len(data.keys) / timer.seconds["embed"], 1),
        "batches": {"computed": journal.computed, "reused": journal.reused},
        "seconds": timer.summary(),
    }


def _layer_models(triton: TritonClient, config: EmbedProductsConfig) -> list[str]:
    """`<model>_layer0`, `<model>_layer1`, … as the server has them, in order."""
    available = {status.name for status in triton.models()}
    layers = []
    while layer_model_name(config.model, len(layers)) in available:
        layers.append(layer_model_name(config.model, len(layers)))
    if not layers:
        raise ModelRepositoryError(
            f"Triton at {triton.url} serves no '{layer_model_name(config.model, 0)}' — "
            "export the per-layer models with 'jobs export-models' (or use --mode sampled)"
        )
    return layers


def _embed_layerwise(data: NodeGraph, triton: TritonClient, models: list[str], config: EmbedProductsConfig,
                     on_progress: Callable[[int], None] | None,
                     journal: RunJournal | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Full-neighbourhood inference one layer at a time: each layer's input for every
    node is computed once (no overlapping sampled subgraphs), the neighbour mean is one
    sparse product here, and Triton applies the layer's weights in large batches."""
    mean = NeighbourMean(data.graph)
    num_nodes = len(data.keys)
    chunks = [slice(s, min(s + config.layer_batch_size, num_nodes))
              for s in range(0, num_nodes, config.layer_batch_size)]
    rows, embedding = data.features, None
    for layer, model in enumerate(models):
        done = [journal.load(f"L{layer}-B{b}") if journal else None for b in range(len(chunks))]
        todo = [b for b, out in enumerate(done) if out is None]
        neighbours = mean(rows) if todo else None
        requests = ({LAYER_SELF: rows[chunks[b]], LAYER_NEIGHBOURS: neighbours[chunks[b]]} for b in todo)
        for b, result in zip(todo, triton.infer_many(model, requests, max_in_flight=config.max_in_flight)):
            done[b] = result[LAYER_OUT]
            if journal:
                journal.save(f"L{layer}-B{b}", done[b])
                kill_point("embed", journal.computed)
            if on_progress:
                on_progress((chunks[b].stop - chunks[b].start) / len(models))
        outputs = np.empty((num_nodes, done[0].shape[1]), np.float32)
        for chunk, out in zip(chunks, done):
            outputs[chunk] = out
        if layer == len(models) - 2:
            embedding = outputs
        rows = outputs
    return embedding, rows.argmax(axis=1)


def _embed(data: NodeGraph, triton: TritonClient, config: EmbedProductsConfig,
           on_progress: Callable[[int], None] | None,
           journal: RunJournal | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings [N, d], predicted category [N]) from Triton, one sampled subgraph per batch."""
    sampler = NeighbourSampler(data.graph, config.fanouts, seed=config.seed)
    num_nodes = len(data.keys)
    batches = [np.arange(s, min(s + config.batch_size, num_nodes)) for s in range(0, num_nodes, config.batch_size)]

    saved = [journal.load(f"S-B{b}") if journal else None for b in range(len(batches))]
    todo = [b for b, out in enumerate(saved) if out is None]

    def requests() -> Iterator[dict]:
        for number in todo:
            yield subgraph_request(data.features, sampler.sample(batches[number], batch_number=number))

    def results() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(embedding, logits) per batch: journaled ones from disk, the rest from Triton."""
        fresh = zip(todo, triton.infer_many(config.model, requests(), max_in_flight=config.max_in_flight))
        for number in range(len(batches)):
            if saved[number] is not None:
                yield saved[number][EMBEDDING], saved[number][LOGITS]
                continue
            _, result = next(fresh)
            if journal:
                journal.save(f"S-B{number}", {EMBEDDING: result[EMBEDDING], LOGITS: result[LOGITS]})
                kill_point("embed", journal.computed)
            yield result[EMBEDDING], result[LOGITS]

    embeddings, predicted = None, np.zeros(num_nodes, np.int64)
    for targets, (embedding, logits) in zip(batches, results()):
        if embedding.shape[0] != len(targets):
            raise TritonInferenceError(
                f"model '{config.model}' returned {embedding.shape[0]} embeddings for {len(targets)} nodes"
            )
        if embeddings is None:
            embeddings = np.zeros((num_nodes, embedding.shape[1]), np.float32)
        embeddings[targets] = embedding
        predicted[targets] = logits.argmax(axis=1)
        if on_progress:
            on_progress(len(targets))
    return embeddings, predicted
