"""`jobs embed-products`: product graph → GraphSAGE on Triton → FAISS → write-back → publish.

Recipe: pull products + co-purchase edges as Arrow → CSR → layer-wise inference: per
layer, neighbour means for all nodes, then Triton (`graphsage_layerN`, large batches,
several requests in flight) applies the layer (or, `--mode sampled`, one sampled
computation graph per batch of targets through `graphsage`) → embeddings + predicted
categories → FAISS index → top-k similar products → write back `embedding`, `similar`,
`predicted_category` → publish the index.

`executor="ray"`: the pull is a Ray read task per key range (`graphsvc.distributed.pull`),
the layers run on a Ray cluster in node partitions (`graphsvc.distributed.layerwise`),
the write-back is Ray workers updating ArangoDB, or Parquet shards written by them that
one loader ingests into the embedded store (`graphsvc.distributed.publish`); the rest of
the recipe is the same.
"""

from __future__ import annotations

from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import pyarrow as pa

from graphsvc.distributed.cluster import ray_session
from graphsvc.errors import ConfigError
from graphsvc.graph.datasets import load_node_graph
from graphsvc.incremental import fingerprint, row_hashes
from graphsvc.index.publish import publish_embeddings
from graphsvc.inference.layerwise import run_layers
from graphsvc.inference.runners import TritonLayers, layer_models
from graphsvc.inference.sampled import embed_sampled
from graphsvc.runs import job_journal
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
    executor: str = "local"  # or "ray" (layer-wise mode)
    ray_address: str | None = None  # None: a Ray started on this machine for the job
    partitions: int = 0  # Ray: node partitions (0: graphsvc.distributed.partitions.default_partitions)
    ray_actors: int = 2  # Ray: actors calling Triton, one client each
    ray_order: str = "bfs"  # Ray: the node order partitions are ranges of (bfs or key)
    ray_broadcast: bool | None = None  # Ray: force how layers reach the partitions (None: by size)


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
    if config.mode not in ("layerwise", "sampled"):
        raise ConfigError(f"unknown embedding mode '{config.mode}' (layerwise or sampled)")
    on_ray = config.executor == "ray"
    if on_ray and config.mode != "layerwise":
        raise ConfigError("--executor ray runs the layer-wise mode only (leave out --mode sampled)")
    with ray_session(config.ray_address) if on_ray else nullcontext(), ExitStack() as cleanup:
        pull_report = None
        with timer("pull"):
            if on_ray:  # a read task per key range, the embedded store read-only in the workers
                from graphsvc.distributed.pull import pull_node_graph_on_ray

                data, pull_report = pull_node_graph_on_ray(store, config.nodes, config.edges, config.features)
            else:
                data = load_node_graph(store, config.nodes, config.edges, config.features)
        store.release()  # the service may read the store while we compute; the write-back reopens it

        partitions = 1
        if on_ray:
            from graphsvc.distributed.partitions import default_partitions

            partitions = config.partitions or default_partitions(len(data.keys), config.ray_actors)
        models = (layer_models(triton, config.model, hint="or use --mode sampled") if config.mode == "layerwise"
                  else [config.model])
        triton.wait_ready(timeout=config.ready_timeout, models=models)
        model_version = triton.latest_version(models[0])
        # finished batches are journaled: a rerun on the same inputs skips them
        journal = job_journal(index_dir, config.nodes, "embed-products", fingerprint(
            data.keys, row_hashes(data.features), data.graph.indptr, data.graph.indices, model_version,
            config.model, config.mode, config.layer_batch_size, config.batch_size, list(config.fanouts), config.seed,
            *((config.executor, partitions, config.ray_order) if on_ray else ())))
        summary = _embed_and_publish(store, triton, index_dir, config, data, models, model_version, journal,
                                     partitions, timer, on_progress, cleanup)
        if pull_report is not None:
            summary["ray"]["pull"] = pull_report
        return summary


def _embed_and_publish(store, triton, index_dir, config, data, models, model_version, journal, partitions, timer,
                       on_progress, cleanup: ExitStack) -> dict:
    on_ray, ray_report, write_back = config.executor == "ray", None, None
    with timer("embed"):
        if on_ray:
            from graphsvc.distributed.layerwise import embed_layerwise_on_ray
            from graphsvc.distributed.publish import Shard, ray_write_back

            result = embed_layerwise_on_ray(
                data.graph, data.features, triton.url, models, partitions=partitions, actors=config.ray_actors,
                batch_size=config.layer_batch_size, max_in_flight=config.max_in_flight, order=config.ray_order,
                broadcast=config.ray_broadcast, journal=journal, on_progress=on_progress, keep_workers=True)
            cleanup.callback(result.release)  # after the write-back
            embeddings, logits = result.embeddings, result.logits
            # ArangoDB: workers update the shards' documents; embedded: the workers that
            # computed the partitions write Parquet shards, one loader ingests them
            write_back = ray_write_back(store, journal, data.keys, [
                Shard(part.owned, embedding, logit) for part, embedding, logit in
                zip(result.partitioning.parts, result.embedding_blocks, result.logit_blocks)], result.workers)
            ray_report = result.summary(len(data.keys))
            computed, reused = result.computed, result.reused
        elif config.mode == "layerwise":
            # each layer reports its rows: a node's share of the bar is split among the layers
            progress = (lambda rows: on_progress(rows / len(models))) if on_progress else None
            embeddings, logits = run_layers(TritonLayers(triton, models, config.max_in_flight), data.graph,
                                            data.features, batch_size=config.layer_batch_size, journal=journal,
                                            on_progress=progress)
        else:
            embeddings, logits = embed_sampled(
                data.graph, data.features, partial(triton.infer_many, config.model, max_in_flight=config.max_in_flight),
                config.model, fanouts=config.fanouts, batch_size=config.batch_size, seed=config.seed, journal=journal,
                on_progress=on_progress)
        if not on_ray:
            computed, reused = journal.computed, journal.reused

    published = publish_embeddings(
        store, index_dir, config.nodes, data.keys, embeddings, job="embed-products",
        model={"name": config.model, "version": model_version}, top_k=config.top_k, timer=timer,
        columns={"predicted_category": pa.array(logits.argmax(axis=1))},
        manifest={"mode": config.mode, "fanouts": list(config.fanouts) if config.mode == "sampled" else None},
        keep=config.keep, arangodb_vector_index=config.arangodb_vector_index,
        **(_ray_publish(write_back, partitions) if on_ray else {}))
    journal.remove()
    return {
        "collection": config.nodes,
        "embedded": len(data.keys),
        "edges": int(data.graph.num_edges // 2),
        "dangling_edges": data.dangling_edges,
        **published.summary(),
        "nodes_per_second": round(len(data.keys) / timer.seconds["embed"], 1),
        "batches": {"computed": computed, "reused": reused},
        "executor": config.executor,
        **({"ray": {**ray_report, "write_back": write_back.report}} if on_ray else {}),
        "seconds": timer.summary(),
    }


def _ray_publish(write_back, partitions: int) -> dict:
    from graphsvc.distributed.publish import index_on_ray

    return {"index": index_on_ray(partitions), "write_back": write_back}
