"""`Snapshot`: the arrays of the last successful run of a collection (slot keys, input
hashes, per-layer hidden states, similar lists), saved beside the index and replaced
atomically; and the store's document revisions it records, which tell the documents
someone else replaced since (a replace drops the attributes a run wrote back)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from graphsvc.files import fsync_path, write_text
from graphsvc.incremental.slots import SlotPlan


def revisions_by_key(store, collection: str, keys: pa.Array) -> pa.Array | None:
    """The store's document revisions for `keys` (in that order), or None when the store
    keeps none."""
    try:
        table = pa.Table.from_batches(list(store.pull_revisions(collection)),
                                      schema=pa.schema([("_key", pa.string()), ("_rev", pa.string())]))
    except NotImplementedError:
        return None
    where = pc.index_in(keys, value_set=table.column("_key").combine_chunks())
    return table.column("_rev").combine_chunks().take(where)


SNAPSHOT_CURRENT = "CURRENT"


class Snapshot:
    """The arrays and metadata of the last successful run of a collection."""

    def __init__(self, directory: Path, meta: dict, keys: pa.Array, revisions: pa.Array | None = None):
        self.directory = directory
        self.meta = meta
        self.keys = keys
        self.revisions = revisions  # per slot: the document revision after the run's write-back

    @property
    def id(self) -> str:
        return self.directory.name

    def array(self, name: str) -> np.ndarray | None:
        path = self.directory / f"{name}.npy"
        return np.load(path) if path.exists() else None

    @classmethod
    def load(cls, state_dir: Path) -> "Snapshot | None":
        try:
            name = (state_dir / SNAPSHOT_CURRENT).read_text().strip()
        except FileNotFoundError:
            return None
        directory = state_dir / name
        meta = json.loads((directory / "meta.json").read_text())
        with pa.OSFile(str(directory / "keys.arrow"), "rb") as source:
            table = pa.ipc.open_file(source).read_all()
        revisions = table.column("_rev").combine_chunks() if "_rev" in table.column_names else None
        return cls(directory, meta, table.column("_key").combine_chunks(), revisions)

    @staticmethod
    def save(state_dir: Path, meta: dict, keys: pa.Array, arrays: dict[str, np.ndarray],
             revisions: pa.Array | None = None) -> "Snapshot":
        """Write a complete snapshot next to the current one, then switch CURRENT to it
        (one rename) and remove the old one."""
        return Snapshot.finish(Snapshot.stage(state_dir, arrays), meta, keys, revisions)

    @staticmethod
    def stage(state_dir: Path, arrays: dict[str, np.ndarray]) -> Path:
        """The first half of `save`: the arrays, durable, in a directory no reader looks
        at (a crash leaves it for the next save to remove)."""
        state_dir.mkdir(parents=True, exist_ok=True)
        tmp = state_dir / f".tmp-snapshot-{secrets.token_hex(6)}"
        tmp.mkdir()
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", array)
            fsync_path(tmp / f"{name}.npy")
        return tmp

    @staticmethod
    def finish(staged: Path, meta: dict, keys: pa.Array, revisions: pa.Array | None = None) -> "Snapshot":
        """The second half of `save`: keys, revisions and meta beside the staged arrays,
        then CURRENT switched to them."""
        state_dir = staged.parent
        table = pa.table({"_key": keys} if revisions is None else {"_key": keys, "_rev": revisions})
        with pa.OSFile(str(staged / "keys.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        (staged / "meta.json").write_text(json.dumps(meta, indent=2))
        final = state_dir / f"snapshot-{secrets.token_hex(6)}"
        os.rename(staged, final)
        write_text(state_dir / SNAPSHOT_CURRENT, final.name + "\n")
        for entry in state_dir.iterdir():  # the previous snapshot and leftovers of crashed saves
            if entry.name.startswith((".tmp-snapshot-", "snapshot-")) and entry.name != final.name:
                shutil.rmtree(entry, ignore_errors=True)
        return Snapshot(final, meta, keys, revisions)


def replaced_since(snapshot: "Snapshot | None", plan: SlotPlan, revisions: pa.Array | None) -> np.ndarray:
    """Per slot, whether its document was replaced since the last run's write-back (its
    revision differs from the one the snapshot recorded); False where either side has no
    revisions or the document is new."""
    replaced = np.zeros(len(plan.order), bool)
    if revisions is None or snapshot is None or snapshot.revisions is None:
        return replaced
    present = np.flatnonzero(plan.old_slot >= 0)
    before = snapshot.revisions.take(pa.array(plan.old_slot[present]))
    differs = pc.fill_null(pc.not_equal(revisions.take(pa.array(present)), before), True)
    replaced[present] = differs.to_numpy(zero_copy_only=False)
    return replaced
