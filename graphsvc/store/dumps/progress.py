"""How far the restore of one collection of one dump got, as kept in the store's job state,
so that an interrupted restore resumes after the last committed line."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

_KEY_PREFIX = "restore-dumps"


def progress_key(dump_directory: str | os.PathLike, collection: str) -> str:
    """The job-state key under which the progress of one collection of one dump is kept."""
    return f"{_KEY_PREFIX}:{Path(dump_directory).resolve()}:{collection}"


@dataclass(frozen=True)
class RestoreProgress:
    dump: str  # the dump directory, resolved
    collection: str
    status: Literal["running", "done"]
    read: int = 0  # non-blank data lines, rejected ones included
    written: int = 0
    skipped: int = 0
    removed: int = 0
    file: str | None = None  # name of the data file holding the last committed line
    line: int = 0  # the last committed line of `file`

    def to_state(self) -> dict:
        state = {
            "dump": self.dump,
            "collection": self.collection,
            "status": self.status,
            "read": self.read,
            "written": self.written,
            "skipped": self.skipped,
            "removed": self.removed,
        }
        if self.file is not None:
            state.update(file=self.file, line=self.line)
        return state

    @classmethod
    def from_state(cls, state: dict) -> "RestoreProgress":
        return cls(
            dump=str(state.get("dump", "")),
            collection=str(state.get("collection", "")),
            status="done" if state.get("status") == "done" else "running",
            read=int(state.get("read", 0)),
            written=int(state.get("written", 0)),
            skipped=int(state.get("skipped", 0)),
            removed=int(state.get("removed", 0)),
            file=state.get("file"),
            line=int(state.get("line", 0) or 0),
        )
