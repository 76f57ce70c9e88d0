"""The Ray executor's part of the embed jobs' tail (`graphsvc.index.publish`): the index
and top-k pass, and the write-back through Parquet shards.

Write-back (`ray_write_back` picks one): on the embedded store, which has a single
writer, a task per partition writes a Parquet shard of (`_key`, `embedding`, `similar`,
the job's columns) from the rows where they were computed, and one loader — the driver —
ingests the shards one by one with `store.update_attributes` (`ParquetWriteBack`). On
ArangoDB a task per shard opens the store and bulk-updates the shard's documents itself,
at most GRAPHSVC_RAY_WRITERS per coordinator at once, and marks the shard done in the
job's journal, so a rerun after a killed driver skips the shards already written
(`StoreWriteBack`). `jobs reindex` on Ray writes its changed rows the same way on
ArangoDB (its shards the chunks of those rows; `Shard.predicted` and `Shard.columns`
carry what it has already computed), and keeps its driver's chunked write-back on the
embedded store.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa

from graphsvc.distributed.cluster import import_ray, run_bounded, task_resources, worker_kill_point
from graphsvc.distributed.index import distributed_index_with_neighbours
from graphsvc.index.similar import Indexed
from graphsvc.runs import RunJournal
from graphsvc.settings import RAY_WRITERS, read
from graphsvc.store import is_server_url

#: times Ray retries a shard's update whose worker died (updates by key are idempotent)
WRITE_RETRIES = 3


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
    predicted: Any = None  # [len(rows)] categories already chosen (reindex), instead of logits
    columns: dict = field(default_factory=dict)  # more vector attributes by name: [len(rows), d] each


@dataclass(frozen=True)
class Neighbours:
    """Every row's top k as the write-backs read them (an `Indexed` has them too): what a
    reindex writes is its similar windows cut to k."""

    ids: np.ndarray  # [N, k] row numbers, -1 where fewer exist
    scores: np.ndarray  # [N, k] float32


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
            indexed.ids[shard.rows], indexed.scores[shard.rows], shard.predicted, shard.columns)
            for number, shard in enumerate(self.shards)])
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


def ray_write_back(store, journal: RunJournal, keys: pa.Array, shards: Sequence[Shard], writers: Sequence = ()):
    """The Ray executor's write-back for `store`: workers updating ArangoDB directly
    (`StoreWriteBack`), or Parquet shards one loader ingests (`ParquetWriteBack`: the
    embedded store, or a store no worker can open). `writers`: actors that hold the
    shards' rows (the Parquet shards are written by them)."""
    address = store.address()
    if address is not None and is_server_url(address.url):
        return StoreWriteBack(address, journal.directory, keys, shards)
    return ParquetWriteBack(journal.directory / "shards", keys, shards, writers)


@dataclass
class StoreWriteBack:
    """`publish_embeddings`' write_back on ArangoDB: a Ray task per shard opens the store
    (`address`: a `StoreAddress`) and bulk-updates the shard's documents
    (`update_attributes`: one existence check of its keys, then an UPDATE per chunk), at
    most `concurrency` (default GRAPHSVC_RAY_WRITERS) per coordinator at once. A shard
    written is marked `WB-S{n}` in the journal at `journal_dir`; a rerun skips it."""

    address: Any
    journal_dir: Path
    keys: pa.Array
    shards: Sequence[Shard]
    concurrency: int | None = None
    report: dict = field(default_factory=dict)

    def __call__(self, store, collection: str, indexed: Indexed) -> None:
        ray = import_ray()
        started = time.perf_counter()
        journal = RunJournal(self.journal_dir)
        limit = max(1, (self.concurrency or read(RAY_WRITERS)) * max(1, getattr(self.address, "coordinators", 1)))
        todo = [number for number in range(len(self.shards)) if not journal.done(shard_step(number))]
        keys = ray.put(self.keys)
        task = ray.remote(update_shard).options(max_retries=WRITE_RETRIES, **task_resources(ray))
        done = run_bounded(ray, [partial(
            task.remote, self.address, collection, str(self.journal_dir), number, keys, self.shards[number].rows,
            self.shards[number].embedding, self.shards[number].logits, indexed.ids[self.shards[number].rows],
            indexed.scores[self.shards[number].rows], self.shards[number].predicted, self.shards[number].columns)
            for number in todo], limit)
        self.report.update({"shards": len(self.shards), "skipped": len(self.shards) - len(todo),
                            "rows": int(sum(shard["rows"] for shard in done)), "writers": limit,
                            "peak_writers": peak_overlap(done),
                            "seconds": {"update": round(time.perf_counter() - started, 3)}})


def shard_step(number: int) -> str:
    """The journal step of write-back shard `number`."""
    return f"WB-S{number}"


def update_shard(address, collection: str, journal_dir: str, number: int, keys: pa.Array, rows: np.ndarray,
                 embedding: np.ndarray, logits: np.ndarray | None, ids: np.ndarray, scores: np.ndarray,
                 predicted: np.ndarray | None = None, columns: dict | None = None) -> dict:
    """One shard's rows written into the store by key, then marked done (in a Ray worker)."""
    started = time.time()
    table = shard_table(keys, rows, embedding, logits, ids, scores, predicted, columns)
    worker_kill_point(shard_step(number), Path(journal_dir).parent)  # tests: a worker dies before its update
    with address.open(read_only=False) as store:
        written = store.update_attributes(collection, table)
    RunJournal(Path(journal_dir)).mark(shard_step(number), {"rows": table.num_rows, "written": written})
    return {"shard": number, "rows": table.num_rows, "written": written, "started": started, "finished": time.time()}


def peak_overlap(spans: Sequence[dict]) -> int:
    """The most of the `started`–`finished` spans that overlapped at one time."""
    events = sorted([(s["started"], 1) for s in spans] + [(s["finished"], -1) for s in spans],
                    key=lambda e: (e[0], e[1]))
    peak = running = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


def shard_table(keys: pa.Array, rows: np.ndarray, embedding: np.ndarray, logits: np.ndarray | None,
                ids: np.ndarray, scores: np.ndarray, predicted: np.ndarray | None = None,
                columns: dict | None = None) -> pa.Table:
    """A shard's write-back: `_key`, `embedding`, `similar`, (products) `predicted_category`
    from the logits or as chosen already, and any more vector `columns`."""
    from graphsvc.index.similar import embedding_array, similar_array

    table = {"_key": keys.take(pa.array(rows, pa.int64())), "embedding": embedding_array(embedding),
             "similar": similar_array(keys, ids, scores)}
    if predicted is not None:
        table["predicted_category"] = pa.array(np.asarray(predicted))
    elif logits is not None:
        table["predicted_category"] = pa.array(np.asarray(logits).argmax(axis=1))
    for name, values in (columns or {}).items():
        table[name] = embedding_array(values)
    return pa.table(table)


def write_shard(path: str, keys: pa.Array, rows: np.ndarray, embedding: np.ndarray, logits: np.ndarray | None,
                ids: np.ndarray, scores: np.ndarray, predicted: np.ndarray | None = None,
                columns: dict | None = None) -> str:
    """One shard's rows as Parquet, written aside and renamed in (in a Ray worker)."""
    import os

    import pyarrow.parquet as pq

    aside = f"{path}.partial"
    pq.write_table(shard_table(keys, rows, embedding, logits, ids, scores, predicted, columns), aside)
    os.replace(aside, path)
    return path
