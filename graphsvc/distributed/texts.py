"""Sentence embeddings on Ray: Ray Data's `map_batches` over a pool of actors, each with
one Triton client, encoding its batches as the local job does (`graphsvc.inference.texts`:
tokenised in the actor, sub-batches of similar length, a few requests in flight).
The length-sorted texts go in blocks, each journaled as `RT-B{b}` once all its rows are
back, so a rerun after a killed driver encodes only the blocks not saved."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pyarrow as pa

from graphsvc.distributed.cluster import import_ray, worker_runtime_env
from graphsvc.runs import RunJournal, kill_point

#: texts per Ray Data batch: enough sub-batches of `batch_size` for the actor's requests in flight
SUB_BATCHES_PER_BATCH = 16


class EncoderWorker:
    """A Ray Data actor: one Triton client and tokenizer, a batch of (row, text) at a time."""

    def __init__(self, triton_url: str, model: str, batch_size: int, max_in_flight: int):
        from graphsvc.triton.client import TritonClient

        self._triton = TritonClient(triton_url)
        self._model, self._batch_size, self._max_in_flight = model, batch_size, max_in_flight

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from functools import partial

        from graphsvc.inference.texts import encode_texts

        infer_many = partial(self._triton.infer_many, self._model, max_in_flight=self._max_in_flight)
        embeddings = encode_texts([str(text) for text in batch["text"]], infer_many, self._model,
                                  batch_size=self._batch_size)
        return {"row": batch["row"], "block": batch["block"], "embedding": embeddings}


def encode_texts_on_ray(texts: Sequence[str], triton_url: str, model: str, *, batch_size: int = 64,
                        max_in_flight: int = 2, actors: int = 2, blocks: int = 0, journal: RunJournal | None = None,
                        on_progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Unit vectors [len(texts), d] in the order of `texts`, computed on a Ray cluster
    already joined. The texts go in by length (each Ray batch holds texts of similar
    length, so its requests pad little) in `blocks` blocks (0: two per actor, at least).

    With a `journal`, block b is saved as `RT-B{b}` (its rows and their vectors) as soon
    as all its rows are back, counted at the kill point `embed` and reported to
    `on_progress` with its size; the blocks an earlier run saved are loaded, and only the
    others go to Ray."""
    from graphsvc.models.text import Tokenizer

    if not texts:
        return np.zeros((0, 0), np.float32)
    order = np.argsort(Tokenizer().lengths(texts), kind="stable")
    per_batch = batch_size * SUB_BATCHES_PER_BATCH
    blocks = max(blocks or 2 * actors, -(-len(texts) // per_batch))
    bounds = [len(texts) * b // blocks for b in range(blocks + 1)]
    spans = [(b, order[start:stop]) for b, (start, stop) in enumerate(zip(bounds, bounds[1:])) if stop > start]
    out: np.ndarray | None = None
    todo = []
    for b, rows in spans:
        found = _load_block(journal, b, rows)
        if found is None:
            todo.append((b, rows))
            continue
        if out is None:
            out = np.empty((len(texts), found.shape[1]), np.float32)
        out[rows] = found
    if not todo:
        return out
    ray = import_ray()
    tables = [pa.table({"row": pa.array(rows), "block": pa.array(np.full(len(rows), b, np.int64)),
                        "text": pa.array([texts[i] for i in rows])}) for b, rows in todo]
    dataset = ray.data.from_arrow(tables).map_batches(
        EncoderWorker, fn_constructor_args=(triton_url, model, batch_size, max_in_flight),
        batch_size=per_batch, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=1,
        runtime_env=worker_runtime_env())
    missing = {b: len(rows) for b, rows in todo}  # rows of each block not back yet
    block_rows = dict(todo)
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        if out is None:
            out = np.empty((len(texts), batch["embedding"].shape[1]), np.float32)
        out[batch["row"]] = batch["embedding"]
        for b, count in zip(*np.unique(batch["block"], return_counts=True)):
            missing[int(b)] -= int(count)
            if missing[int(b)]:
                continue
            rows = block_rows[int(b)]
            if journal:
                journal.save(f"RT-B{b}", {"rows": rows, "embedding": out[rows]})
                kill_point("embed", journal.computed)
            if on_progress:
                on_progress(len(rows))
    return out


def _load_block(journal: RunJournal | None, block: int, rows: np.ndarray) -> np.ndarray | None:
    """Block `block`'s vectors saved by an earlier run of the same blocks, or None (none
    saved, or saved for other rows: a run with another number of blocks)."""
    if journal is None or not journal.has(f"RT-B{block}"):
        return None
    found = journal.load(f"RT-B{block}")
    if isinstance(found, dict) and np.array_equal(found.get("rows"), rows) and "embedding" in found:
        return found["embedding"]
    if found is not None:
        journal.reused -= 1  # loaded, but not this block: computed again, and counted as such
    return None
