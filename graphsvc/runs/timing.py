"""Time the phases of a job for its summary."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator


class PhaseTimer:
    """`with timer("embed"): …` adds the block's wall time to the phase `embed`."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._started = time.perf_counter()

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - started

    def summary(self) -> dict[str, float]:
        return {**{k: round(v, 3) for k, v in self.seconds.items()},
                "total": round(time.perf_counter() - self._started, 3)}
