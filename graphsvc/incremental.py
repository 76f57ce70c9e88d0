"""The pieces of an incremental re-index, independent of the model and of Triton.

- Input hashes: one 64-bit hash per node of what its embedding depends on directly —
  its features (`row_hashes`), the set of its neighbours (`neighbour_hashes`), a text
  (`text_hashes`). Touching any other attribute changes no hash, so re-embeds nothing.
- Slots: a node keeps its row ("slot") from one run to the next, so index ids, stored
  hidden states and `similar` ids stay valid. A removed node's slot is filled by the
  node in the last slot and new nodes are appended (`plan_slots`): ids stay dense
  0..N-1, as the published `keys.arrow` needs, and only moved nodes change id.
- Change propagation through mean aggregation: `neighbour_mean_rows` recomputes one
  layer's neighbour means for some rows only; `mean_change` bounds how far the
  neighbour means of every node moved when some rows changed (one sparse matvec).
- `Snapshot`: the arrays of the last successful run (slot keys, input hashes, per-layer
  hidden states, similar lists), saved beside the index and replaced atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from graphsvc.graph import CSRGraph

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a well-spread 64-bit hash of each uint64."""
    with np.errstate(over="ignore"):
        z = np.asarray(x, np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def row_hashes(matrix: np.ndarray) -> np.ndarray:
    """One uint64 per row of a float32 matrix, from the exact bit patterns: a multilinear
    hash (each column's bits times its own odd 64-bit constant, summed mod 2^64), so a
    change of any one value always changes the hash, then spread by `mix64`."""
    bits = np.ascontiguousarray(matrix, np.float32).view(np.uint32)
    constants = mix64(np.arange(bits.shape[1], dtype=np.uint64)) | np.uint64(1)
    with np.errstate(over="ignore"):
        return mix64(np.einsum("ij,j->i", bits.astype(np.uint64), constants, dtype=np.uint64))


def text_hashes(texts: Sequence[str]) -> np.ndarray:
    return np.array(
        [int.from_bytes(hashlib.blake2b(t.encode("utf-8"), digest_size=8).digest(), "little") for t in texts],
        np.uint64,
    )


def neighbour_hashes(graph: CSRGraph, identity: np.ndarray) -> np.ndarray:
    """Per node, an order-free hash of the set of its neighbours' identities."""
    mixed = mix64(np.asarray(identity, np.uint64))[graph.indices]
    sums = np.zeros(graph.num_nodes, np.uint64)
    nonempty = np.flatnonzero(graph.degree() > 0)
    if len(nonempty):
        with np.errstate(over="ignore"):
            sums[nonempty] = np.add.reduceat(mixed, graph.indptr[nonempty], dtype=np.uint64)
    return sums ^ mix64(graph.degree().astype(np.uint64))


def fingerprint(*parts) -> str:
    """A short digest of arrays and JSON-able values (the identity of a planned run)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(np.ascontiguousarray(part).tobytes())
        elif isinstance(part, (pa.Array, pa.ChunkedArray)):
            for buffer in (part.combine_chunks() if isinstance(part, pa.ChunkedArray) else part).buffers():
                if buffer is not None:
                    h.update(memoryview(buffer))
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"|")
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------ slots


@dataclass(frozen=True)
class SlotPlan:
    """How tonight's nodes take the slots of the last run's."""

    order: np.ndarray  # slot s holds the pulled row order[s]
    old_slot: np.ndarray  # per new slot: the node's slot last run, -1 for a new node
    new_slot_of_old: np.ndarray  # per old slot: its node's slot now, -1 when removed
    removed: np.ndarray  # old slots whose node is gone
    added: np.ndarray  # new slots of new nodes

    @property
    def relocated(self) -> np.ndarray:
        """New slots of surviving nodes whose slot number changed."""
        survivors = np.flatnonzero(self.old_slot >= 0)
        return survivors[self.old_slot[survivors] != survivors]


def plan_slots(old_keys: pa.Array | None, pulled_keys: pa.Array) -> SlotPlan:
    n = len(pulled_keys)
    if old_keys is None or len(old_keys) == 0:
        order = np.arange(n, dtype=np.int64)
        return SlotPlan(order, np.full(n, -1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), order.copy())
    # where each old key is among tonight's rows (-1: removed), and which rows are new
    pulled_of_old = pc.index_in(old_keys, value_set=pulled_keys).to_numpy(zero_copy_only=False)
    pulled_of_old = np.where(np.isnan(pulled_of_old.astype(np.float64)), -1, pulled_of_old).astype(np.int64)
    removed = np.flatnonzero(pulled_of_old < 0)
    survivors = len(old_keys) - len(removed)
    slot_of_old = np.arange(len(old_keys), dtype=np.int64)
    holes = removed[removed < survivors]
    movers = np.setdiff1d(np.arange(survivors, len(old_keys)), removed)  # survivors beyond the end
    slot_of_old[movers] = holes  # the last nodes fill the holes, in order
    slot_of_old[removed] = -1
    is_new = np.ones(n, bool)
    is_new[pulled_of_old[pulled_of_old >= 0]] = False
    new_rows = np.flatnonzero(is_new)
    order = np.empty(survivors + len(new_rows), np.int64)
    kept = np.flatnonzero(slot_of_old >= 0)
    order[slot_of_old[kept]] = pulled_of_old[kept]
    order[survivors:] = new_rows
    old_slot = np.full(len(order), -1, np.int64)
    old_slot[slot_of_old[kept]] = kept
    added = np.arange(survivors, len(order), dtype=np.int64)
    return SlotPlan(order, old_slot, slot_of_old, removed, added)


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


def carried(old: np.ndarray | None, plan: SlotPlan, width: int | None = None, fill: float = 0.0,
            reuse: bool = False) -> np.ndarray:
    """An array of the last run moved to tonight's slots; new slots get `fill`. Most
    nodes keep their slot number, so this is one copy of the common prefix and a fix-up
    of the slots whose node changed (not a gather over every row). With `reuse` the
    result may be `old` itself, changed in place (when there are no more slots than
    before), for a caller that has no further use for `old`."""
    n = len(plan.old_slot)
    if old is None:
        return np.full((n,) + ((width,) if width else ()), fill, np.float32)
    common = min(n, len(old))
    if reuse and n <= len(old) and old.flags.writeable:
        out = old[:n]
    else:
        out = np.empty((n,) + old.shape[1:], old.dtype)
        out[:common] = old[:common]
    fix = np.flatnonzero(plan.old_slot[:common] != np.arange(common))
    fix = np.concatenate([fix, np.arange(common, n)])
    source = plan.old_slot[fix]
    present = source >= 0
    out[fix[present]] = old[source[present]]
    out[fix[~present]] = fill
    return out


# --------------------------------------------------------- mean aggregation


def neighbour_mean_rows(graph: CSRGraph, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The mean of the neighbours' `values` for `rows` only (zeros for isolated rows),
    the same numbers `graphsvc.graph.NeighbourMean` gives for them: one sparse product
    over those rows' slice of the adjacency, so it costs in proportion to their edges."""
    import warnings

    import torch

    rows = np.asarray(rows, np.int64)
    if len(rows) == 0:
        return np.zeros((0, values.shape[1]), np.float32)
    indptr, neighbours = graph.rows(rows)
    degrees = np.diff(indptr)
    weights = np.repeat((1.0 / np.maximum(degrees, 1)).astype(np.float32), degrees)
    with torch.sparse.check_sparse_tensor_invariants(enable=False), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        matrix = torch.sparse_csr_tensor(torch.from_numpy(indptr), torch.from_numpy(neighbours),
                                         torch.from_numpy(weights), size=(len(rows), len(values)))
        with torch.inference_mode():
            return (matrix @ torch.from_numpy(np.ascontiguousarray(values, np.float32))).numpy()


def mean_change(graph: CSRGraph, changed: np.ndarray, moved: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """When rows `changed` moved by `moved` (each row's max-abs change), a bound on how far
    (max abs) the neighbour mean of every node moved: (affected nodes, bound). The bound
    is the mean over a node's neighbours of their max-abs changes — exact when one
    neighbour moved, never below the true change (triangle inequality) — and costs one
    sparse product with a single column instead of one per dimension."""
    changed = np.asarray(changed, np.int64)
    if len(changed) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    per_node = np.zeros(graph.num_nodes, np.float32)
    per_node[changed] = moved
    degrees = graph.degree()
    sums = np.zeros(graph.num_nodes, np.float64)
    nonempty = np.flatnonzero(degrees > 0)
    if len(nonempty):
        sums[nonempty] = np.add.reduceat(per_node[graph.indices], graph.indptr[nonempty], dtype=np.float64)
    bound = (sums / np.maximum(degrees, 1)).astype(np.float32)
    affected = np.flatnonzero(bound > 0)
    return affected, bound[affected]


# ------------------------------------------------------------------- snapshot


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
            with open(tmp / f"{name}.npy", "wb") as f:
                np.save(f, array)
                f.flush()
                os.fsync(f.fileno())
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
        current_tmp = state_dir / f".tmp-current-{secrets.token_hex(6)}"
        current_tmp.write_text(final.name + "\n")
        os.replace(current_tmp, state_dir / SNAPSHOT_CURRENT)
        for entry in state_dir.iterdir():  # the previous snapshot and leftovers of crashed saves
            if entry.name.startswith((".tmp-snapshot-", "snapshot-")) and entry.name != final.name:
                shutil.rmtree(entry, ignore_errors=True)
        return Snapshot(final, meta, keys, revisions)
