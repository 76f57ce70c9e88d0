"""`jobs embed-products`: product graph → GraphSAGE on Triton → FAISS → write-back → publish.

Recipe: pull products + co-purchase edges as Arrow → CSR → one sampled computation graph
per batch of target nodes → Triton (`graphsage`, many nodes per request, several
requests in flight) → embeddings + predicted categories → FAISS index → top-k similar
products → write back `embedding`, `similar`, `predicted_category` → publish the index.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa

from graphsvc.datasets import NodeGraph, load_node_graph
from graphsvc.errors import TritonInferenceError
from graphsvc.graph import NeighbourSampler
from graphsvc.index.artifacts import publish
from graphsvc.models.graphsage import EMBEDDING, LOGITS, subgraph_request
from graphsvc.index.faiss_index import VectorIndex
from graphsvc.index.similar import embedding_array, similar_lists
from graphsvc.store import require_vector_index
from graphsvc.store.base import GraphStore
from graphsvc.timing import PhaseTimer
from graphsvc.triton.client import TritonClient


@dataclass(frozen=True)
class EmbedProductsConfig:
    nodes: str = "products"
    edges: str = "bought_together"
    features: str = "features"
    model: str = "graphsage"
    top_k: int = 10
    batch_size: int = 512
    fanouts: tuple[int, ...] = (15, 10, 5)
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

    triton.wait_ready(timeout=config.ready_timeout, models=[config.model])
    model_version = triton.latest_version(config.model)
    with timer("embed"):
        embeddings, predicted = _embed(data, triton, config, on_progress)

    with timer("index"):
        index = VectorIndex.build(embeddings, metric="cosine")
        similar = similar_lists(index, data.keys, config.top_k)

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
            extra={"job": "embed-products", "top_k": config.top_k, "fanouts": list(config.fanouts)},
            keep=config.keep,
        )
    return {
        "collection": config.nodes,
        "embedded": len(data.keys),
        "edges": int(data.graph.num_edges // 2),
        "dangling_edges": data.dangling_edges,
        "dimension": int(embeddings.shape[1]),
        "index_version": manifest.version,
        "index_kind": index.kind,
        "arangodb_vector_index": vector_index,
        "nodes_per_second": round(len(data.keys) / timer.seconds["embed"], 1),
        "seconds": timer.summary(),
    }


def _embed(data: NodeGraph, triton: TritonClient, config: EmbedProductsConfig,
           on_progress: Callable[[int], None] | None) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings [N, d], predicted category [N]) from Triton, one sampled subgraph per batch."""
    sampler = NeighbourSampler(data.graph, config.fanouts, seed=config.seed)
    num_nodes = len(data.keys)
    batches = [np.arange(s, min(s + config.batch_size, num_nodes)) for s in range(0, num_nodes, config.batch_size)]

    def requests() -> Iterator[dict]:
        for number, targets in enumerate(batches):
            yield subgraph_request(data.features, sampler.sample(targets, batch_number=number))

    embeddings, predicted = None, np.zeros(num_nodes, np.int64)
    for targets, result in zip(batches, triton.infer_many(config.model, requests(), max_in_flight=config.max_in_flight)):
        embedding, logits = result[EMBEDDING], result[LOGITS]
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
