"""The sentence encoder's batches: length-sorted, journaled as T-B<n>, results in the
order of the texts."""

from __future__ import annotations

import numpy as np

from graphsvc.inference.texts import encode_texts
from graphsvc.models.text import ATTENTION_MASK, EMBEDDING, Tokenizer
from graphsvc.runs import RunJournal

TEXTS = ["a much longer sentence than the others, by several words", "short", "a middling sentence",
         "tiny", "another sentence of some length here"]


def token_counts(requests):  # a model whose "vector" is the text's token count
    for request in requests:
        yield {EMBEDDING: request[ATTENTION_MASK].sum(axis=1, keepdims=True).astype(np.float32)}


def test_vectors_come_back_in_the_order_of_the_texts_from_length_sorted_batches(tmp_path):
    journal = RunJournal(tmp_path / "run")
    vectors = encode_texts(TEXTS, token_counts, "sentence_encoder", batch_size=2, journal=journal)
    lengths = Tokenizer().lengths(TEXTS)
    np.testing.assert_array_equal(vectors[:, 0], lengths)
    first = np.load(journal.directory / "T-B0.npy")[:, 0]
    assert list(first) == sorted(lengths)[:2]  # the shortest texts share the first request
    assert journal.computed == 3


def test_no_texts_give_no_vectors():
    assert encode_texts([], token_counts, "sentence_encoder").shape == (0, 0)
