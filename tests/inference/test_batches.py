"""The journaled batch loop: finished batches come from the journal, the rest from the
model, in order; a result of the wrong size names the model."""

from __future__ import annotations

import numpy as np
import pytest

from graphsvc.errors import TritonInferenceError
from graphsvc.inference.batches import run_batches, split_rows
from graphsvc.runs import RunJournal

SIZES = [4, 4, 4, 2]
NAMES = [f"L0-B{b}" for b in range(len(SIZES))]


def request(b: int) -> np.ndarray:
    return np.full((SIZES[b], 3), b, np.float32)


class Model:
    """Doubles each request; after `fail_after` results it stops as a killed run would."""

    def __init__(self, fail_after: int | None = None):
        self.seen: list[float] = []
        self.fail_after = fail_after

    def infer_many(self, requests):
        for inputs in requests:
            if self.fail_after is not None and len(self.seen) == self.fail_after:
                raise KeyboardInterrupt
            self.seen.append(float(inputs[0, 0]))
            yield inputs * 2


def test_results_come_back_in_batch_order_and_progress_counts_rows():
    rows: list[int] = []
    results = run_batches("double", NAMES, SIZES, request, Model().infer_many, on_progress=rows.append)
    assert [float(r[0, 0]) for r in results] == [0.0, 2.0, 4.0, 6.0]
    assert rows == SIZES


def test_a_rerun_computes_only_the_batches_its_journal_lacks(tmp_path):
    journal = RunJournal(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        run_batches("double", NAMES, SIZES, request, Model(fail_after=2).infer_many, journal=journal)
    assert journal.computed == 2

    rerun, model = RunJournal(tmp_path / "run"), Model()
    results = run_batches("double", NAMES, SIZES, request, model.infer_many, journal=rerun)
    assert model.seen == [2.0, 3.0]  # only the missing batches were sent
    assert (rerun.reused, rerun.computed) == (2, 2)
    expected = run_batches("double", NAMES, SIZES, request, Model().infer_many)
    assert all(np.array_equal(a, b) for a, b in zip(results, expected))


def test_several_named_outputs_are_journaled_together(tmp_path):
    def infer_many(requests):
        for inputs in requests:
            yield {"embedding": inputs, "logits": inputs[:, :1]}

    first = run_batches("sampled", NAMES, SIZES, request, infer_many, journal=RunJournal(tmp_path / "run"))
    again = run_batches("sampled", NAMES, SIZES, request, infer_many, journal=RunJournal(tmp_path / "run"))
    assert [sorted(r) for r in again] == [["embedding", "logits"]] * len(SIZES)
    assert all(np.array_equal(a["logits"], b["logits"]) for a, b in zip(first, again))


@pytest.mark.parametrize("output", ["array", "dict"])
def test_a_result_with_the_wrong_row_count_raises_naming_the_model(output, tmp_path):
    def infer_many(requests):
        for inputs in requests:
            short = inputs[:-1]
            yield short if output == "array" else {"embedding": inputs, "logits": short}

    journal = RunJournal(tmp_path / "run")
    with pytest.raises(TritonInferenceError, match="model 'graphsage_layer0' returned 3 rows for a batch of 4"):
        run_batches("graphsage_layer0", NAMES, SIZES, request, infer_many, journal=journal)
    assert journal.computed == 0  # nothing wrong reaches the journal


def test_split_rows_keeps_order_and_the_last_batch_short():
    assert [list(b) for b in split_rows(np.arange(5), 2)] == [[0, 1], [2, 3], [4]]
