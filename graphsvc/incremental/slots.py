"""Slots: a node keeps its row ("slot") from one run to the next, so index ids, stored
hidden states and `similar` ids stay valid. A removed node's slot is filled by the node
in the last slot and new nodes are appended (`plan_slots`): ids stay dense 0..N-1, as the
published `keys.arrow` needs, and only moved nodes change id. `carried` moves last run's
arrays to tonight's slots."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


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


def union_ids(*parts: np.ndarray) -> np.ndarray:
    """The sorted distinct non-negative ids in any of `parts` (a mask, not a sort)."""
    parts = [np.asarray(p, np.int64) for p in parts if len(p)]
    if not parts:
        return np.zeros(0, np.int64)
    mask = np.zeros(max(int(p.max()) for p in parts) + 1, bool)
    for p in parts:
        mask[p] = True
    return np.flatnonzero(mask)
