"""The Python-backend stub processes of a tritonserver work directory, found through /proc.

Triton runs each Python-backend model instance in a `triton_python_backend_stub` process.
A server killed with SIGKILL leaves them running (they ignore SIGTERM, ~700 MB each
here), each holding its model; `end_orphaned_stubs` ends those before the next server
starts on the same work directory.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path


def python_stub_processes(work_dir: str | os.PathLike) -> dict[int, str]:
    """{pid: model directory} of the Python-backend stubs running out of a server's work dir
    (one per model instance), read from /proc."""
    marker = str(Path(work_dir).resolve() / "backends" / "python" / "triton_python_backend_stub")
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(args) > 1 and args[0].decode(errors="replace") == marker:
            found[int(entry.name)] = str(Path(args[1].decode(errors="replace")).parent.parent)
    return found


def end_orphaned_stubs(work_dir: str | os.PathLike) -> list[int]:
    """End the Python-backend stubs of `work_dir` whose tritonserver is gone; their pids.
    Stubs of a server still running are left alone."""
    ended = []
    for pid in python_stub_processes(work_dir):
        if _is_tritonserver(_parent_pid(pid)):
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            ended.append(pid)
    return ended


def _parent_pid(pid: int) -> int | None:
    try:  # /proc/PID/stat: "pid (comm) state ppid …", comm may hold spaces and parentheses
        return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _is_tritonserver(pid: int | None) -> bool:
    if not pid or pid == 1:
        return False
    try:
        program = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return False
    return Path(program.decode(errors="replace")).name == "tritonserver"
