"""Work saved batch by batch: a journal is a directory per planned run (named by a
fingerprint of its inputs); every finished batch is an `.npy` file written aside and
renamed in, so it exists whole or not at all; steps that are not batches (a write-back
chunk, the publish) are marker entries. A rerun of the same plan finds them and skips them."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np

from graphsvc.files import atomic_file, write_json


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

    def has(self, name: str) -> bool:
        """Whether a finished batch named `name` is saved (without reading it)."""
        return self._path(name).exists() or self._path(name).with_suffix(".npz").exists()

    def save(self, name: str, array: np.ndarray | dict[str, np.ndarray]) -> None:
        """Written aside and renamed in, so a killed process leaves the batch whole or
        absent. Not fsynced: the journal only saves recomputation (a batch lost with
        the machine is computed again), and an fsync per batch cost ~1 s per 100k rows."""
        several = isinstance(array, dict)
        suffix = ".npz" if several else ".npy"
        with atomic_file(self._path(name).with_suffix(suffix)) as f:
            np.savez(f, **array) if several else np.save(f, array)
        self.computed += 1

    def done(self, step: str) -> bool:
        return (self.directory / f"{step}.done").exists()

    def mark(self, step: str, value: dict | None = None) -> None:
        write_json(self.directory / f"{step}.done", value or {}, indent=None)

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


def job_lock_path(index_dir: Path, collection: str) -> Path:
    """The run lock (`graphsvc.runs.lock.RunLock`) of the jobs writing `collection`'s
    artifact, beside their journals: every command that runs such a job (e.g.
    `jobs recommend-users` and `jobs reindex users`) takes this one file, so two runs on
    one artifact never interleave."""
    return Path(index_dir) / ".jobs" / collection / "LOCK"
