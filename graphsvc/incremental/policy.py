"""How the index follows tonight's vectors: the published index updated in place by id
(then only the similar windows a move can reach are refreshed), a flat index rebuilt by
copy, or everything rebuilt (index and every similar list) — and why."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from graphsvc.errors import IndexCorrupt, IndexNotFound
from graphsvc.incremental.slots import SlotPlan, carried, union_ids
from graphsvc.incremental.snapshot import Snapshot
from graphsvc.index.artifacts import current_version, load_version
from graphsvc.index.faiss_index import AUTO_FLAT_MAX, VectorIndex, l2_normalise
from graphsvc.index.similar import Indexed, index_with_neighbours, refresh_similar

REBUILD, COPY, UPDATE = "rebuild", "copy", "update"


@dataclass
class SimilarLists:
    """Every slot's similar window: up to `window` entries, best first (-1 / -inf
    padding), and the score no document outside the window beat when it was searched."""

    ids: np.ndarray  # [N, window] slot ids
    scores: np.ndarray  # [N, window] float32
    boundary: np.ndarray  # [N] float32
    changed: np.ndarray | None = None  # slots whose top k changed; None: every slot (a rebuild)

    NAMES = ("similar_ids", "similar_scores", "similar_boundary")
    CHANGED = "similar_changed"

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays a snapshot keeps, by name."""
        return dict(zip(self.NAMES, (self.ids, self.scores, self.boundary)))

    def save(self, directory: Path) -> None:
        extra = {} if self.changed is None else {self.CHANGED: self.changed}
        for name, array in {**self.arrays(), **extra}.items():
            np.save(directory / f"{name}.npy", array)

    @classmethod
    def load(cls, directory: Path) -> "SimilarLists":
        ids, scores, boundary = (np.load(directory / f"{name}.npy") for name in cls.NAMES)
        changed = directory / f"{cls.CHANGED}.npy"
        return cls(ids, scores, boundary, np.load(changed) if changed.exists() else None)


def carried_similar(snapshot: Snapshot | None, plan: SlotPlan, window: int) -> SimilarLists:
    """Last run's similar windows in tonight's slots, ids renumbered; entries naming a
    removed document are dropped. Without them (or of another width), every row is new."""
    n = len(plan.order)
    old_ids = snapshot.array("similar_ids") if snapshot else None
    if old_ids is None or old_ids.shape[1] != window:
        return SimilarLists(np.full((n, window), -1, np.int64), np.full((n, window), -np.inf, np.float32),
                            np.full(n, np.inf, np.float32))
    ids = carried(old_ids, plan, fill=-1)
    valid = ids >= 0
    ids = np.where(valid, plan.new_slot_of_old[np.where(valid, ids, 0)], -1)
    scores = np.where(ids >= 0, carried(snapshot.array("similar_scores"), plan, fill=-np.inf), -np.inf)
    boundary = carried(snapshot.array("similar_boundary"), plan, fill=np.inf).astype(np.float32)
    return SimilarLists(ids, scores.astype(np.float32), boundary)


def published_index(index_dir: Path, collection: str, version: int | None) -> tuple[VectorIndex | None, str | None]:
    """The published index when it is still `version` (the last run's), else None and why."""
    try:
        if current_version(index_dir, collection) != version:
            return None, f"the published version is not v{version} of the last run"
        return load_version(index_dir, collection, version).index, None
    except (IndexCorrupt, IndexNotFound) as exc:
        return None, f"the published index cannot be read ({exc})"


@dataclass(frozen=True)
class IndexDecision:
    action: str  # REBUILD: a new index and every list; COPY: a new flat index, lists refreshed; UPDATE: in place
    reason: str | None  # (UPDATE: set once the update says how many ids it moved)
    published: VectorIndex | None = None  # the index to update in place


def choose_update(*, full: bool, n: int, far: int, removed: int, rebuild_share: float, trained: int | None,
                  published: Callable[[], tuple[VectorIndex | None, str | None]]) -> IndexDecision:
    """Whether tonight's `n` vectors (`far` of them moved farther than the list tolerance,
    `removed` gone) can update the published index or need a rebuild. `trained`: how many
    vectors the published index was built for; `published` loads it (only when needed)."""
    if full:
        return IndexDecision(REBUILD, "full run")
    if far + removed > rebuild_share * max(n, 1):
        return IndexDecision(REBUILD, f"{far + removed} of {n} vectors moved far or were removed "
                                      f"(> {rebuild_share:.0%}: centroids trained on the old vectors would degrade)")
    index, reason = published()
    if index is None:
        return IndexDecision(REBUILD, reason)
    if not index.supports_updates:
        if n < AUTO_FLAT_MAX:  # exact search: a copy of the vectors, no training
            return IndexDecision(COPY, "flat: rebuilt by copy")
        return IndexDecision(REBUILD, f"{n} vectors: too many for a {index.kind} index")
    trained = trained or n
    if n < AUTO_FLAT_MAX or n > 2 * trained or n < trained // 2:
        return IndexDecision(REBUILD, f"{n} vectors: outside the range the IVF index was trained for ({trained})")
    return IndexDecision(UPDATE, None, index)


def ids_to_update(plan: SlotPlan, shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The index ids to remove and to (re-)add for an in-place update: removed and
    relocated nodes leave their old ids; relocated, moved and new nodes are added at
    their slot (a moved node that kept its slot is removed first)."""
    moved = np.flatnonzero(shift > 0)
    remove = union_ids(plan.removed, plan.old_slot[plan.relocated],
                       moved[(plan.old_slot[moved] >= 0) & (plan.old_slot[moved] == moved)])
    add = union_ids(plan.relocated, moved, plan.added)
    return remove, add


@dataclass
class IndexUpdate:
    index: VectorIndex
    lists: SimilarLists
    info: dict  # the summary's `index`: action, reason, kind, calibration, trained_count, similar_*, far_movers


def update_index(snapshot: Snapshot | None, plan: SlotPlan, embedding: np.ndarray, shift: np.ndarray, full: bool,
                 *, top_k: int, similar_tolerance: float, rebuild_share: float,
                 published: Callable[[], tuple[VectorIndex | None, str | None]],
                 build_index: Callable[..., Indexed] = index_with_neighbours) -> IndexUpdate:
    """The updated (or rebuilt) index and every slot's similar window (2 × top_k wide).
    `shift`: per slot, how far its unit vector moved since the last run (inf: new).
    `build_index` (index_with_neighbours' signature) builds a rebuild's index and lists: the Ray
    executor's tasks (`graphsvc.distributed.publish.index_on_ray`) plug in here."""
    window, n = 2 * top_k, len(embedding)
    far = int((shift > similar_tolerance).sum())
    decision = choose_update(full=full, n=n, far=far, removed=len(plan.removed), rebuild_share=rebuild_share,
                             trained=snapshot.meta.get("trained_count") if snapshot else None, published=published)
    index, reason = decision.published, decision.reason
    if decision.action == COPY:
        index = VectorIndex.build(embedding, kind="flat")
    elif decision.action == UPDATE:
        remove, add = ids_to_update(plan, shift)
        index.update(remove, add, embedding[add])
        reason = f"in place: {len(remove)} vectors removed, {len(add)} added by id"
    if decision.action == REBUILD:
        indexed = build_index(embedding, top_k, lists=window)
        index, ids, scores = indexed.index, indexed.ids, indexed.scores
        if ids.shape[1] < window:
            pad = window - ids.shape[1]
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        boundary = np.where(ids[:, -1] >= 0, scores[:, -1], -np.inf).astype(np.float32)
        lists = SimilarLists(ids, scores, boundary)
        searched, changed = n, n
        info = {"action": "rebuilt", "reason": reason, "kind": index.kind, "calibration": indexed.calibration,
                "trained_count": n}
    else:
        lists = carried_similar(snapshot, plan, window)
        outcome = refresh_similar(index, l2_normalise(embedding), lists.ids, lists.scores, lists.boundary, shift,
                                  top_k, similar_tolerance, score_tolerance=min(1e-3, similar_tolerance))
        searched, changed = len(outcome["searched"]), len(outcome["changed"])
        lists.changed = outcome["changed"]
        info = {"action": "updated", "reason": reason, "kind": index.kind,
                "calibration": snapshot.meta.get("calibration"), "trained_count": snapshot.meta.get("trained_count")}
    info.update(similar_searched=int(searched), similar_changed=int(changed), far_movers=far)
    return IndexUpdate(index, lists, info)
