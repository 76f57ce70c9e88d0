"""The journaled batch loop every job's model calls go through: finished batches come
from the run's journal, the rest from the model, each checked and journaled as it
arrives, so a killed run's rerun computes only what is missing."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

import numpy as np

from graphsvc.errors import TritonInferenceError
from graphsvc.runs import RunJournal, kill_point

Request = TypeVar("Request")
#: a batch's result: an array with a row per item of the batch, or several by name
Result = TypeVar("Result")
#: requests in, results out in the same order (a Triton model's `infer_many`, an in-process model)
InferMany = Callable[[Iterable[Request]], Iterator[Result]]
#: a model's infer_many: requests of named arrays in, {output name: array} out, in order
#: (`functools.partial(triton.infer_many, model, max_in_flight=…)`)
ModelInferMany = Callable[[Iterable[Mapping[str, np.ndarray]]], Iterator[Mapping[str, np.ndarray]]]


def run_batches(
    model: str,
    names: Sequence[str],
    sizes: Sequence[int],
    request: Callable[[int], Request],
    infer_many: InferMany,
    *,
    journal: RunJournal | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> list[Result]:
    """The result of every batch, in order. Batch b is journaled as `names[b]`: one an
    earlier run finished is loaded from `journal`; the others are sent to `infer_many`
    as `request(b)` (built lazily, in order, so requests in flight overlap building the
    next), then checked, saved, counted at the kill point `embed` and reported to
    `on_progress` with their size.

    Raises TritonInferenceError naming `model` when a result (each of its arrays) does
    not have `sizes[b]` rows."""
    results: list[Any] = [journal.load(name) if journal else None for name in names]
    todo = [b for b, result in enumerate(results) if result is None]
    for b, result in zip(todo, infer_many(request(b) for b in todo)):
        _check_rows(model, result, sizes[b])
        if journal:
            journal.save(names[b], result)
            kill_point("embed", journal.computed)
        results[b] = result
        if on_progress:
            on_progress(sizes[b])
    return results


def _check_rows(model: str, result: Any, size: int) -> None:
    for array in result.values() if isinstance(result, dict) else (result,):
        if array.shape[0] != size:
            raise TritonInferenceError(f"model '{model}' returned {array.shape[0]} rows for a batch of {size}")


def batch_ranges(count: int, size: int) -> list[slice]:
    """Consecutive slices of at most `size` covering `count` rows."""
    return [slice(start, min(start + size, count)) for start in range(0, count, size)]


def split_rows(rows: np.ndarray, size: int) -> list[np.ndarray]:
    """`rows` in consecutive batches of at most `size`."""
    return [rows[start : start + size] for start in range(0, len(rows), size)]
