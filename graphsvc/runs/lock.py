"""One run at a time: a lock file holding the owner's pid, host and a heartbeat the owner
refreshes while it runs. A lock whose owner process is gone (same host) or whose heartbeat
is older than `stale_after` seconds (any host, e.g. an index directory on shared storage)
is stale and taken over, so a crashed run never blocks the next night's run for good."""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from pathlib import Path

from graphsvc.errors import GraphsvcError
from graphsvc.files import write_json

#: exit code when another run holds the lock (EX_TEMPFAIL: "try again later")
EXIT_LOCK_HELD = 75


class LockHeld(GraphsvcError):
    """Another run of the job holds the lock."""

    exit_code = EXIT_LOCK_HELD

    def __init__(self, path: Path, owner: dict):
        super().__init__(
            f"another run holds {path} (pid {owner.get('pid')} on {owner.get('host')}, "
            f"heartbeat {owner.get('heartbeat_age', '?')}s ago) — try again later"
        )
        self.owner = owner


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
                    write_json(self.path, self._record(), indent=None)
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
