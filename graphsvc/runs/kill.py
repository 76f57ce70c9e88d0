"""Kill points: where the crash tests SIGKILL a job (GRAPHSVC_TEST_KILL_AT), to show that a
rerun finishes the work."""

from __future__ import annotations

import os
import signal

from graphsvc.settings import TEST_KILL_AT, read


def kill_point(phase: str, count: int | None = None) -> None:
    """Tests only: SIGKILL this process when GRAPHSVC_TEST_KILL_AT names this point
    (`phase`, or `phase:count` to die at the count-th time this point is reached)."""
    wanted = read(TEST_KILL_AT)
    if not wanted:
        return
    name, _, number = wanted.partition(":")
    if name != phase:
        return
    if number and (count is None or int(number) != count):
        return
    os.kill(os.getpid(), signal.SIGKILL)
