import numpy as np
import pyarrow as pa
import pytest

from graphsvc.graph import CSRGraph, NeighbourMean
from graphsvc.incremental import carried, mean_change, neighbour_mean_rows, plan_slots, row_hashes


def _graph(num_nodes=300, num_edges=2400, seed=3):
    rng = np.random.default_rng(seed)
    return CSRGraph.from_edges(rng.integers(0, num_nodes, num_edges), rng.integers(0, num_nodes, num_edges), num_nodes)


def test_neighbour_mean_rows_equals_the_whole_graph_product_for_those_rows():
    graph = _graph()
    values = np.random.default_rng(0).normal(size=(graph.num_nodes, 16)).astype(np.float32)
    rows = np.array([5, 0, 299, 17, 17])
    np.testing.assert_allclose(neighbour_mean_rows(graph, rows, values), NeighbourMean(graph)(values)[rows], atol=1e-6)


def test_mean_change_bounds_the_true_move_and_is_exact_for_one_moved_neighbour():
    graph = _graph()
    rng = np.random.default_rng(1)
    before = rng.normal(size=(graph.num_nodes, 8)).astype(np.float32)
    changed = rng.choice(graph.num_nodes, size=30, replace=False)
    after = before.copy()
    after[changed] += rng.normal(scale=0.5, size=(30, 8)).astype(np.float32)
    mean = NeighbourMean(graph)
    true_move = np.abs(mean(after) - mean(before)).max(axis=1)

    affected, bound = mean_change(graph, changed, np.abs(after[changed] - before[changed]).max(axis=1))
    assert set(affected.tolist()) == set(np.flatnonzero(true_move > 0).tolist())
    assert (bound >= true_move[affected] - 1e-6).all()
    moved_neighbours = np.array([np.isin(graph.neighbours(v), changed).sum() for v in affected])
    single = moved_neighbours == 1
    assert single.any()
    np.testing.assert_allclose(bound[single], true_move[affected][single], rtol=1e-5)
    assert mean_change(graph, np.zeros(0, np.int64), np.zeros(0, np.float32))[0].size == 0


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



def test_row_hashes_see_a_one_ulp_change_and_swapped_columns():
    x = np.random.default_rng(4).standard_normal((500, 64)).astype(np.float32)
    h = row_hashes(x)
    assert len(np.unique(h)) == 500
    assert (row_hashes(x.copy()) == h).all()
    y = x.copy()
    y[5, 7] = np.nextafter(y[5, 7], np.float32(10))
    y[9, [1, 2]] = y[9, [2, 1]]
    assert np.flatnonzero(row_hashes(y) != h).tolist() == [5, 9]
