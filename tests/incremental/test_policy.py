from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest

from graphsvc.incremental import policy
from graphsvc.incremental.policy import (
    COPY,
    REBUILD,
    UPDATE,
    SimilarLists,
    carried_similar,
    choose_update,
    ids_to_update,
    update_index,
)
from graphsvc.incremental.slots import plan_slots
from graphsvc.incremental.snapshot import Snapshot

FLAT = SimpleNamespace(kind="flat", supports_updates=False)
IVF = SimpleNamespace(kind="ivf", supports_updates=True)


def _unused():
    raise AssertionError("the published index was loaded although the decision did not need it")


def _choose(n=1000, far=0, removed=0, trained=1000, published=lambda: (IVF, None), full=False):
    return choose_update(full=full, n=n, far=far, removed=removed, rebuild_share=0.25, trained=trained,
                         published=published)


def test_a_full_run_or_too_many_far_movers_rebuild_without_loading_the_published_index():
    assert _choose(full=True, published=_unused) == policy.IndexDecision(REBUILD, "full run")
    decision = _choose(far=200, removed=51, published=_unused)
    assert decision.action == REBUILD and decision.reason.startswith("251 of 1000 vectors moved far or were removed")


def test_a_published_index_that_cannot_be_used_is_rebuilt_with_its_reason():
    decision = _choose(published=lambda: (None, "the published version is not v3 of the last run"))
    assert (decision.action, decision.reason) == (REBUILD, "the published version is not v3 of the last run")


def test_a_small_flat_index_is_rebuilt_by_copy_and_a_large_one_rebuilt(monkeypatch):
    assert _choose(far=250, published=lambda: (FLAT, None)).action == COPY  # at the share: not above it
    monkeypatch.setattr(policy, "AUTO_FLAT_MAX", 500)
    decision = _choose(published=lambda: (FLAT, None))
    assert (decision.action, decision.reason) == (REBUILD, "1000 vectors: too many for a flat index")


def test_an_ivf_index_is_updated_in_place_only_within_the_size_it_was_trained_for(monkeypatch):
    assert _choose().action == REBUILD  # below the flat size an IVF index is not kept
    monkeypatch.setattr(policy, "AUTO_FLAT_MAX", 500)
    decision = _choose()
    assert decision.action == UPDATE and decision.published is IVF
    assert _choose(n=1000, trained=499).action == REBUILD  # more than twice what it was trained on
    assert _choose(n=1000, trained=2002).action == REBUILD  # fewer than half
    assert _choose(n=1000, trained=None).action == UPDATE  # unknown: taken as tonight's count


def test_an_in_place_update_moves_removed_relocated_moved_and_new_ids():
    # b is removed, e takes its slot (1), f is new (slot 4), c moved in place (slot 2)
    plan = plan_slots(pa.array(["a", "b", "c", "d", "e"]), pa.array(["a", "c", "d", "e", "f"]))
    shift = np.array([0, 0, 0.3, 0, np.inf], np.float32)
    remove, add = ids_to_update(plan, shift)
    assert remove.tolist() == [1, 2, 4] and add.tolist() == [1, 2, 4]


def test_carried_similar_renumbers_entries_and_drops_removed_documents(tmp_path):
    ids = np.array([[1, 2], [3, 0], [3, -1], [1, 2]])
    scores = np.array([[0.9, 0.8], [0.7, 0.6], [0.5, -np.inf], [0.4, 0.3]], np.float32)
    snapshot = Snapshot.save(tmp_path, {}, pa.array(["a", "b", "c", "d"]),
                             SimilarLists(ids, scores, scores[:, -1].copy()).arrays())
    plan = plan_slots(snapshot.keys, pa.array(["a", "c", "d"]))  # b removed: d takes its slot 1
    lists = carried_similar(snapshot, plan, 2)
    # rows a, d, c: the entries naming b gone, d named by its new slot
    assert lists.ids.tolist() == [[-1, 2], [-1, 2], [1, -1]]
    assert lists.scores[:, 0].tolist() == [-np.inf, -np.inf, pytest.approx(0.5)]
    assert lists.boundary.tolist() == pytest.approx([0.8, 0.3, -np.inf])
    assert (carried_similar(snapshot, plan, 3).boundary == np.inf).all()  # another width: every row new


def test_update_index_rebuilds_on_a_full_run_and_refreshes_only_reachable_lists_after(tmp_path):
    rng = np.random.default_rng(0)
    keys = pa.array([f"k{i}" for i in range(200)])
    vectors = rng.normal(size=(200, 8)).astype(np.float32)
    plan = plan_slots(None, keys)
    settings = {"top_k": 5, "similar_tolerance": 0.05, "rebuild_share": 0.25}
    first = update_index(None, plan, vectors, np.full(200, np.inf, np.float32), True, published=_unused,
                         **settings)
    assert first.info["action"] == "rebuilt" and first.lists.changed is None and first.lists.ids.shape == (200, 10)
    snapshot = Snapshot.save(tmp_path, {"trained_count": 200}, keys, first.lists.arrays())

    moved = vectors.copy()
    moved[7] = -moved[7]  # one vector turned around: far
    shift = np.zeros(200, np.float32)
    shift[7] = 2.0
    same = plan_slots(keys, keys)
    second = update_index(snapshot, same, moved, shift, False, published=lambda: (first.index, None), **settings)
    assert second.info["action"] == "updated" and second.info["reason"] == "flat: rebuilt by copy"
    assert second.info["far_movers"] == 1 and 7 in second.lists.changed.tolist()
    unit = moved / np.linalg.norm(moved, axis=1, keepdims=True)
    exact = unit @ unit.T
    np.fill_diagonal(exact, -np.inf)
    assert second.lists.ids[:, :5].tolist() == np.argsort(-exact, axis=1)[:, :5].tolist()
