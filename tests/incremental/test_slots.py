import numpy as np
import pyarrow as pa
import pytest

from graphsvc.incremental.slots import carried, plan_slots, union_ids


def test_a_removed_nodes_slot_goes_to_the_last_node_and_new_nodes_are_appended():
    plan = plan_slots(pa.array(["a", "b", "c", "d", "e"]), pa.array(["f", "e", "d", "c", "a"]))
    pulled = ["f", "e", "d", "c", "a"]
    assert [pulled[i] for i in plan.order] == ["a", "e", "c", "d", "f"]
    assert plan.old_slot.tolist() == [0, 4, 2, 3, -1]
    assert plan.new_slot_of_old.tolist() == [0, -1, 2, 3, 1]
    assert plan.removed.tolist() == [1] and plan.added.tolist() == [4]
    assert plan.relocated.tolist() == [1]  # only "e" changed id
    first = plan_slots(None, pa.array(["x", "y"]))
    assert first.order.tolist() == [0, 1] and first.added.tolist() == [0, 1] and (first.old_slot == -1).all()


@pytest.mark.parametrize("removed,added", [(0, 0), (3, 0), (0, 4), (3, 4), (6, 2), (2, 9)])
def test_carried_moves_each_row_to_its_nodes_new_slot(removed, added):
    rng = np.random.default_rng(removed * 10 + added)
    old_keys = [f"k{i}" for i in range(20)]
    gone = set(rng.choice(20, removed, replace=False).tolist())
    pulled = [k for i, k in enumerate(old_keys) if i not in gone] + [f"new{i}" for i in range(added)]
    rng.shuffle(pulled)
    plan = plan_slots(pa.array(old_keys), pa.array(pulled))
    old = np.arange(20 * 3, dtype=np.float32).reshape(20, 3)
    out = carried(old, plan, fill=-1.0)
    new_keys = [pulled[i] for i in plan.order]
    assert len(out) == 20 - removed + added
    for slot, key in enumerate(new_keys):
        expected = old[old_keys.index(key)] if key in old_keys else np.full(3, -1.0)
        assert out[slot].tolist() == expected.tolist(), (slot, key)
    assert carried(None, plan, width=2).shape == (len(new_keys), 2)
    # in place where the slots fit: the same rows
    assert carried(old.copy(), plan, fill=-1.0, reuse=True).tolist() == out.tolist()


def test_union_ids_is_sorted_and_distinct():
    assert union_ids(np.array([5, 1]), np.zeros(0, np.int64), np.array([1, 3])).tolist() == [1, 3, 5]
    assert union_ids().tolist() == []
