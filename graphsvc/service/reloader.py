"""The indexes a running service answers from, swapped when a job publishes a new version.

A background thread looks at each collection's CURRENT every `interval` seconds. A new
version is loaded beside the live one (checksums verified, key map and direct map built),
then swapped in with one reference assignment; requests already running keep the index
they started with, and the old one is freed when the last of them finishes. A version
that fails to load (a checksum mismatch, a missing or truncated file) is refused: the
live index keeps serving, the failure is logged and counted, and the same version is
retried only after `retry_failed_after` seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from graphsvc.errors import GraphsvcError
from graphsvc.index.artifacts import LoadedIndex, current_version, load_version
from graphsvc.service.errors import NotFound, Unavailable

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReloadEvent:
    collection: str
    version: int
    outcome: str  # "loaded" or "refused"
    detail: str = ""


class IndexReloader:
    def __init__(
        self,
        index_dir: str | Path,
        collections: list[str] | None = None,
        interval: float = 1.0,
        retry_failed_after: float = 30.0,
        on_event: Callable[[ReloadEvent, LoadedIndex | None], None] | None = None,
    ):
        self.index_dir = Path(index_dir)
        self.configured = list(collections) if collections else None
        self.interval = interval
        self.retry_failed_after = retry_failed_after
        self.on_event = on_event
        self._live: dict[str, LoadedIndex] = {}
        self._refused: dict[str, tuple[int, float, str]] = {}
        self._check_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- what requests see ----------------------------------------------------------------
    def collections(self) -> list[str]:
        """The configured collections (with the text-space index `<c>.text` a graph-aware
        embed job publishes beside `c`), or every collection directory under index_dir."""
        if self.configured is not None:
            return self.configured + [f"{c}.text" for c in self.configured
                                      if f"{c}.text" not in self.configured and (self.index_dir / f"{c}.text").is_dir()]
        if not self.index_dir.is_dir():
            return []
        return sorted(e.name for e in self.index_dir.iterdir() if e.is_dir() and not e.name.startswith("."))

    def get(self, collection: str) -> LoadedIndex:
        """The live index of `collection`: NotFound when the service does not serve it,
        Unavailable while none of its versions is loaded."""
        loaded = self._live.get(collection)
        if loaded is not None:
            return loaded
        served = (collection in self.collections() if self.configured is not None
                  else (self.index_dir / collection).is_dir())
        if not served:
            raise NotFound(f"collection '{collection}' has no index here — publish one with 'jobs embed-{collection}'")
        refused = self._refused.get(collection)
        why = f": version {refused[0]} was refused ({refused[2]})" if refused else ""
        raise Unavailable(f"no index of '{collection}' is loaded yet{why}")

    def live(self) -> dict[str, LoadedIndex]:
        return dict(self._live)

    def refused(self) -> dict[str, tuple[int, str]]:
        return {c: (v, why) for c, (v, _, why) in self._refused.items()}

    def describe(self) -> list[dict[str, Any]]:
        """Per served collection: whether an index is loaded, its manifest's figures, and
        the version last refused with the reason (what GET /v1/collections answers)."""
        out = []
        refused = self.refused()
        for name in self.collections():
            live = self._live.get(name)
            entry: dict[str, Any] = {"collection": name, "loaded": live is not None}
            if live is not None:
                m = live.manifest
                entry |= {"version": m.version, "count": m.count, "dim": m.dim, "metric": m.metric, "kind": m.kind,
                          "params": m.params, "model": m.model, "text_search": bool(m.extra.get("text_attribute"))}
            if name in refused:
                entry["refused"] = {"version": refused[name][0], "reason": refused[name][1]}
            out.append(entry)
        return out

    @property
    def ready(self) -> bool:
        """True when an index is loaded for every configured collection (or, without a
        configured list, for at least one)."""
        if self.configured is not None:
            return all(c in self._live for c in self.configured)
        return bool(self._live)

    # -- checking for new versions ----------------------------------------------------------
    def check(self) -> list[ReloadEvent]:
        """One pass over the collections; loads and swaps what changed."""
        events = []
        with self._check_lock:
            for collection in self.collections():
                event = self._check_one(collection)
                if event is not None:
                    events.append(event)
        return events

    def _check_one(self, collection: str) -> ReloadEvent | None:
        try:
            version = current_version(self.index_dir, collection)
        except (GraphsvcError, ValueError, OSError) as exc:
            return self._refuse(collection, -1, str(exc))
        if version is None:
            return None
        live = self._live.get(collection)
        if live is not None and live.version == version:
            return None
        refused = self._refused.get(collection)
        if refused and refused[0] == version and time.monotonic() - refused[1] < self.retry_failed_after:
            return None
        started = time.perf_counter()
        try:
            loaded = load_version(self.index_dir, collection, version, verify=True).warm()
        except GraphsvcError as exc:
            # a publish that pruned this version right after we read CURRENT is not a failure
            if current_version(self.index_dir, collection) != version:
                return None
            return self._refuse(collection, version, str(exc))
        except Exception as exc:  # a reader bug must not stop the watcher
            return self._refuse(collection, version, f"{type(exc).__name__}: {exc}")
        self._live[collection] = loaded  # the swap: one reference assignment
        self._refused.pop(collection, None)
        took = time.perf_counter() - started
        LOG.warning("serving %s index v%d (%d vectors, loaded in %.2fs)", collection, version, len(loaded), took)
        event = ReloadEvent(collection, version, "loaded", f"{took:.3f}s")
        if self.on_event:
            self.on_event(event, loaded)
        return event

    def _refuse(self, collection: str, version: int, why: str) -> ReloadEvent:
        self._refused[collection] = (version, time.monotonic(), why)
        live = self._live.get(collection)
        keeps = f"; still serving v{live.version}" if live else ""
        LOG.error("refused %s index v%d: %s%s", collection, version, why, keeps)
        event = ReloadEvent(collection, version, "refused", why)
        if self.on_event:
            self.on_event(event, None)
        return event

    # -- the watcher thread -------------------------------------------------------------------
    def start(self) -> "IndexReloader":
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="index-reloader", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.check()
            except Exception:  # pragma: no cover - logged, the watcher keeps going
                LOG.exception("index check failed")
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

