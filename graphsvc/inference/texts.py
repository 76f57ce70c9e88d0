"""The sentence encoder over many texts: tokenised here, in batches of texts of similar
length so each request pads only to its own longest sentence. Batch b (of the
length-sorted texts) is journaled as `T-B{b}`."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from graphsvc.inference.batches import ModelInferMany, run_batches, split_rows
from graphsvc.models.text import EMBEDDING, Tokenizer
from graphsvc.runs import RunJournal


def encode_texts(texts: Sequence[str], infer_many: ModelInferMany, model: str, *, batch_size: int = 64,
                 journal: RunJournal | None = None,
                 on_progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Unit vectors [len(texts), d], in the order of `texts` (no columns without texts);
    `model` names the model in errors."""
    tokenizer = Tokenizer()
    order = np.argsort(tokenizer.lengths(texts), kind="stable")
    batches = split_rows(order, batch_size)

    def vectors(requests):
        for result in infer_many(requests):
            yield result[EMBEDDING]

    results = run_batches(model, [f"T-B{b}" for b in range(len(batches))], [len(rows) for rows in batches],
                          lambda b: tokenizer.request([texts[i] for i in batches[b]]), vectors,
                          journal=journal, on_progress=on_progress)
    if not results:
        return np.zeros((0, 0), np.float32)
    embeddings = np.empty((len(texts), results[0].shape[1]), np.float32)
    embeddings[order] = np.concatenate(results)
    return embeddings


def encode_texts_in_process(texts: Sequence[str], *, batch_size: int = 64,
                            on_progress: Callable[[int], None] | None = None) -> np.ndarray:
    """`encode_texts` with the sentence encoder in this process (the same weights Triton
    serves): for training and evaluation, which must not need a server."""
    import torch

    from graphsvc.models.text import ATTENTION_MASK, INPUT_IDS, load_sentence_encoder

    encoder = load_sentence_encoder()

    def infer_many(requests):
        for request in requests:
            with torch.inference_mode():
                yield {EMBEDDING: encoder(torch.from_numpy(request[INPUT_IDS]),
                                          torch.from_numpy(request[ATTENTION_MASK])).numpy()}

    return encode_texts(texts, infer_many, "sentence_encoder (in-process)", batch_size=batch_size,
                        on_progress=on_progress)
