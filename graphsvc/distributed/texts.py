"""Sentence embeddings on Ray: Ray Data's `map_batches` over a pool of actors, each with
one Triton client, encoding its batches as the local job does (`graphsvc.inference.texts`:
tokenised in the actor, sub-batches of similar length, a few requests in flight)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa

from graphsvc.distributed.cluster import import_ray, worker_runtime_env

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
        return {"row": batch["row"], "embedding": embeddings}


def encode_texts_on_ray(texts: Sequence[str], triton_url: str, model: str, *, batch_size: int = 64,
                        max_in_flight: int = 2, actors: int = 2, blocks: int = 0) -> np.ndarray:
    """Unit vectors [len(texts), d] in the order of `texts`, computed on a Ray cluster
    already joined. The texts go in by length (each Ray batch holds texts of similar
    length, so its requests pad little) in `blocks` blocks (0: two per actor, at least)."""
    ray = import_ray()
    from graphsvc.models.text import Tokenizer

    if not texts:
        return np.zeros((0, 0), np.float32)
    order = np.argsort(Tokenizer().lengths(texts), kind="stable")
    per_batch = batch_size * SUB_BATCHES_PER_BATCH
    blocks = max(blocks or 2 * actors, -(-len(texts) // per_batch))
    bounds = [len(texts) * b // blocks for b in range(blocks + 1)]
    tables = [pa.table({"row": pa.array(order[start:stop]), "text": pa.array([texts[i] for i in order[start:stop]])})
              for start, stop in zip(bounds, bounds[1:]) if stop > start]
    dataset = ray.data.from_arrow(tables).map_batches(
        EncoderWorker, fn_constructor_args=(triton_url, model, batch_size, max_in_flight),
        batch_size=per_batch, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=1,
        runtime_env=worker_runtime_env())
    out: np.ndarray | None = None
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        if out is None:
            out = np.empty((len(texts), batch["embedding"].shape[1]), np.float32)
        out[batch["row"]] = batch["embedding"]
    return out
