"""The Ray executor's part of the embed jobs' tail (`graphsvc.index.publish`): the index
and top-k pass, and the write-back through Parquet shards.

Write-back: a task per partition writes a Parquet shard of (`_key`, `embedding`,
`similar`, the job's columns) from the rows where they were computed, and one loader —
the driver — ingests the shards one by one with `store.update_attributes`. The embedded
store has a single writer, so that is its only shape; ArangoDB goes the same way for
now (each shard one bulk update from the driver; workers updating with bounded
concurrency is the design for clusters whose driver is the bottleneck).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa

from graphsvc.distributed.cluster import import_ray
from graphsvc.distributed.index import distributed_index_with_neighbours
from graphsvc.index.similar import Indexed


def index_on_ray(partitions: int) -> Callable[..., Indexed]:
    """`publish_embeddings`' index step for the Ray executor: the IVF index and every
    row's top k computed by Ray tasks, `partitions` per step (graphsvc.distributed.index),
    the same cells, probes and lists as the local pass."""

    def index(vectors: np.ndarray, k: int, *, lists: int | None = None) -> Indexed:
        return distributed_index_with_neighbours(vectors, k, lists=lists, partitions=max(1, partitions))

    return index


@dataclass
class Shard:
    rows: np.ndarray  # node numbers of the shard's rows
    embedding: Any  # [len(rows), d] float32: an array or an object ref to one
    logits: Any = None  # [len(rows), classes], for `predicted_category` (products)


@dataclass
class ParquetWriteBack:
    """`publish_embeddings`' write_back: shards written by Ray tasks into `directory`,
    ingested here in order."""

    directory: Path
    keys: pa.Array
    shards: Sequence[Shard]
    writers: Sequence = ()  # actors with a `write_shard` method (started already); else a Ray task per shard
    report: dict = field(default_factory=dict)

    def __call__(self, store, collection: str, indexed: Indexed) -> None:
        ray = import_ray()
        self.directory.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        keys = ray.put(self.keys)
        task = ray.remote(write_shard).options(max_retries=3)
        writers = [actor.write_shard for actor in self.writers] or [task]
        paths = ray.get([writers[number % len(writers)].remote(
            str(self.directory / f"shard-{number:05d}.parquet"), keys, shard.rows, shard.embedding, shard.logits,
            indexed.ids[shard.rows], indexed.scores[shard.rows]) for number, shard in enumerate(self.shards)])
        written = time.perf_counter()
        import pyarrow.parquet as pq

        rows = 0
        for path in paths:
            table = pq.read_table(path)
            store.update_attributes(collection, table)
            rows += table.num_rows
        self.report.update({"shards": len(paths), "rows": rows,
                            "shard_bytes": int(sum(Path(path).stat().st_size for path in paths)),
                            "seconds": {"write_shards": round(written - started, 3),
                                        "load": round(time.perf_counter() - written, 3)}})


def write_shard(path: str, keys: pa.Array, rows: np.ndarray, embedding: np.ndarray, logits: np.ndarray | None,
                 ids: np.ndarray, scores: np.ndarray) -> str:
    """One shard's rows as Parquet, written aside and renamed in (in a Ray worker)."""
    import os

    import pyarrow.parquet as pq

    from graphsvc.index.similar import embedding_array, similar_array

    columns = {"_key": keys.take(pa.array(rows, pa.int64())), "embedding": embedding_array(embedding),
               "similar": similar_array(keys, ids, scores)}
    if logits is not None:
        columns["predicted_category"] = pa.array(np.asarray(logits).argmax(axis=1))
    aside = f"{path}.partial"
    pq.write_table(pa.table(columns), aside)
    os.replace(aside, path)
    return path
