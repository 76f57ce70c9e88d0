"""What makes a batch job safe to kill and rerun: one run at a time (`RunLock`), work
saved batch by batch (`RunJournal`), and a test hook that kills the job at a named
point (`kill_point`).

The lock is a file holding the owner's pid, host and a heartbeat the owner refreshes
while it runs. A lock whose owner process is gone (same host) or whose heartbeat is
older than `stale_after` seconds (any host, e.g. an index directory on shared storage)
is stale and taken over, so a crashed run never blocks the next night's run for good.

A journal is a directory per planned run (named by a fingerprint of its inputs): every
finished batch is an `.npy` file written to a temp name and renamed into place, so a
batch file exists whole or not at all; steps that are not batches (a write-back chunk,
the publish) are marker entries. A rerun of the same plan finds them and skips them.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import threading
import time
import zipfile
from pathlib import Path

import numpy as np

from graphsvc.errors import GraphsvcError

#: exit code when another run holds the lock (EX_TEMPFAIL: "try again later")
EXIT_LOCK_HELD = 75

KILL_ENV = "GRAPHSVC_TEST_KILL_AT"


class LockHeld(GraphsvcError):
    """Another run of the job holds the lock."""

    exit_code = EXIT_LOCK_HELD

    def __init__(self, path: Path, owner: dict):
        super().__init__(
            f"another run holds {path} (pid {owner.get('pid')} on {owner.get('host')}, "
            f"heartbeat {owner.get('heartbeat_age', '?')}s ago) — try again later"
        )
        self.owner = owner


def kill_point(phase: str, count: int | None = None) -> None:
    """Tests only: SIGKILL this process when GRAPHSVC_TEST_KILL_AT names this point
    (`phase`, or `phase:count` to die at the count-th time this point is reached)."""
    wanted = os.environ.get(KILL_ENV)
    if not wanted:
        return
    name, _, number = wanted.partition(":")
    if name != phase:
        return
    if number and (count is None or int(number) != count):
        return
    os.kill(os.getpid(), signal.SIGKILL)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    """`with RunLock(path):` — exclusive across processes and hosts, stale-safe."""

    def __init__(self, path: Path, stale_after: float = 600.0, heartbeat_every: float = 30.0):
        self.path = Path(path)
        self.stale_after = stale_after
        self.heartbeat_every = heartbeat_every
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.token = secrets.token_hex(8)
        self.took_over: dict | None = None  # the stale owner replaced, for the summary
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _record(self) -> dict:
        return {"pid": self.pid, "host": self.host, "token": self.token, "heartbeat": time.time()}

    def _write_new(self) -> bool:
        """Create the lock file atomically; False when it exists."""
        tmp = self.path.with_name(f".{self.path.name}.{self.token}")
        tmp.write_text(json.dumps(self._record()))
        try:
            os.link(tmp, self.path)  # fails when the lock exists: an atomic create-with-content
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def owner(self) -> dict | None:
        try:
            owner = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (ValueError, OSError):
            return {"pid": None, "host": None, "heartbeat": 0.0, "unreadable": True}
        owner["heartbeat_age"] = round(time.time() - float(owner.get("heartbeat", 0.0)), 1)
        return owner

    def is_stale(self, owner: dict) -> bool:
        if owner.get("unreadable"):
            return True
        if owner.get("host") == self.host and owner.get("pid") and not _pid_alive(int(owner["pid"])):
            return True
        return owner["heartbeat_age"] > self.stale_after

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if self._write_new():
                self._start_heartbeat()
                return
            owner = self.owner()
            if owner is None:
                continue  # released meanwhile
            if not self.is_stale(owner):
                raise LockHeld(self.path, owner)
            # move the stale lock aside; only one contender's rename finds it
            aside = self.path.with_name(f".{self.path.name}.stale-{self.token}")
            try:
                os.rename(self.path, aside)
            except FileNotFoundError:
                continue
            moved = json.loads(aside.read_text() or "{}") if aside.exists() else {}
            if moved.get("token") != owner.get("token"):
                # someone else took it over between our read and our rename: give it back
                try:
                    os.link(aside, self.path)
                except FileExistsError:
                    pass
                aside.unlink(missing_ok=True)
                raise LockHeld(self.path, self.owner() or moved)
            aside.unlink(missing_ok=True)
            self.took_over = {k: owner.get(k) for k in ("pid", "host", "heartbeat_age")}
        raise LockHeld(self.path, self.owner() or {})

    def _start_heartbeat(self) -> None:
        def beat():
            while not self._stop.wait(self.heartbeat_every):
                try:
                    owner = json.loads(self.path.read_text())
                    if owner.get("token") != self.token:
                        return  # taken over (we were judged stale): stop touching it
                    tmp = self.path.with_name(f".{self.path.name}.beat-{self.token}")
                    tmp.write_text(json.dumps(self._record()))
                    os.replace(tmp, self.path)
                except (OSError, ValueError):
                    return

        self._thread = threading.Thread(target=beat, name="run-lock-heartbeat", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            if json.loads(self.path.read_text()).get("token") == self.token:
                self.path.unlink()
        except (FileNotFoundError, ValueError):
            pass

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class RunJournal:
    """Finished work of one planned run, in `directory`: arrays and step markers."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.reused = 0  # batches found done
        self.computed = 0  # batches done by this process

    def _path(self, name: str) -> Path:
        return self.directory / f"{name}.npy"

    def load(self, name: str) -> np.ndarray | dict[str, np.ndarray] | None:
        """A finished batch: its array, or its arrays by name when it saved several. A file
        that cannot be read (the machine went down before it reached the disk: saves are
        not fsynced) counts as not done and is removed."""
        for path in (self._path(name), self._path(name).with_suffix(".npz")):
            if not path.exists():
                continue
            try:
                if path.suffix == ".npy":
                    array = np.load(path)
                else:
                    with np.load(path) as arrays:
                        array = dict(arrays)
            except (OSError, ValueError, EOFError, zipfile.BadZipFile):
                path.unlink(missing_ok=True)
                return None
            self.reused += 1
            return array
        return None

    def save(self, name: str, array: np.ndarray | dict[str, np.ndarray]) -> None:
        """Written aside and renamed in, so a killed process leaves the batch whole or
        absent. Not fsynced: the journal only saves recomputation (a batch lost with
        the machine is computed again), and an fsync per batch cost ~1 s per 100k rows."""
        several = isinstance(array, dict)
        suffix = ".npz" if several else ".npy"
        tmp = self.directory / f".{name}.{secrets.token_hex(4)}{suffix}"
        with open(tmp, "wb") as f:
            np.savez(f, **array) if several else np.save(f, array)
        os.replace(tmp, self._path(name).with_suffix(suffix))
        self.computed += 1

    def done(self, step: str) -> bool:
        return (self.directory / f"{step}.done").exists()

    def mark(self, step: str, value: dict | None = None) -> None:
        tmp = self.directory / f".{step}.{secrets.token_hex(4)}"
        tmp.write_text(json.dumps(value or {}))
        os.replace(tmp, self.directory / f"{step}.done")

    def value(self, step: str) -> dict | None:
        try:
            return json.loads((self.directory / f"{step}.done").read_text())
        except FileNotFoundError:
            return None

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def job_journal(index_dir: Path, collection: str, job: str, plan: str) -> RunJournal:
    """The journal of `job` on `collection` for the plan named `plan` (a fingerprint of
    its inputs), under `<index_dir>/.jobs/<collection>/`; journals of the same job for
    other inputs are stale and removed."""
    base = Path(index_dir) / ".jobs" / collection
    if base.is_dir():
        for entry in base.glob(f"{job}-*"):
            if entry.name != f"{job}-{plan}":
                shutil.rmtree(entry, ignore_errors=True)
    return RunJournal(base / f"{job}-{plan}")
