"""The machinery of an incremental re-index, apart from the job that runs it: per-document
input hashes (`hashes`), nodes keeping their row from run to run (`slots`), the last
run's arrays (`snapshot`), which layer outputs a change reaches (`propagation`), whether
the published index is updated in place or rebuilt (`policy`), and what each kind of
collection pulls, diffs and embeds (`targets`). The model runner is a parameter: nothing
here calls Triton."""

from graphsvc.incremental.hashes import fingerprint, neighbour_hashes, row_hashes, text_hashes
from graphsvc.incremental.slots import SlotPlan, carried, plan_slots, union_ids
from graphsvc.incremental.snapshot import Snapshot, replaced_since, revisions_by_key

__all__ = [
    "SlotPlan", "Snapshot", "carried", "fingerprint", "neighbour_hashes", "plan_slots", "replaced_since",
    "revisions_by_key", "row_hashes", "text_hashes", "union_ids",
]
