import numpy as np
import pyarrow as pa

from graphsvc.graph import CSRGraph, NeighbourMean, neighbour_mean_rows
from graphsvc.incremental.propagation import (
    LayerStates,
    first_layer,
    mean_change,
    moved,
    propagate,
    within_hops,
)
from graphsvc.incremental.slots import carried, plan_slots


def _graph(num_nodes=300, num_edges=2400, seed=3):
    rng = np.random.default_rng(seed)
    return CSRGraph.from_edges(rng.integers(0, num_nodes, num_edges), rng.integers(0, num_nodes, num_edges), num_nodes)


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


# ------------------------------------------------------ which rows a change reaches


def _path(num_nodes):
    """0 - 1 - 2 - … - (num_nodes-1)"""
    return CSRGraph.from_edges(np.arange(num_nodes - 1), np.arange(1, num_nodes), num_nodes)


def _same_keys(n):
    keys = pa.array([f"k{i}" for i in range(n)])
    return plan_slots(keys, keys)


def test_layer_zero_recomputes_changed_nodes_their_neighbours_and_changed_neighbour_sets():
    graph, plan = _path(8), _same_keys(8)
    features, neighbours = np.zeros(8, bool), np.zeros(8, bool)
    features[3] = True
    neighbours[6] = True  # a new neighbour set reaches only the node itself at layer 0
    assert np.flatnonzero(first_layer(graph, plan, features, neighbours)).tolist() == [2, 3, 4, 6]
    assert within_hops(graph, first_layer(graph, plan, features, np.zeros(8, bool)), 2).sum() == 7  # 1..7
    grown = plan_slots(pa.array([f"k{i}" for i in range(7)]), pa.array([f"k{i}" for i in range(8)]))
    # a new node (slot 7) counts as changed features: it and its neighbour
    assert np.flatnonzero(first_layer(graph, grown, np.zeros(8, bool), np.zeros(8, bool))).tolist() == [6, 7]


class MeanLayers:
    """A 3-layer mean-aggregation model in numpy (self @ W + neighbour mean @ V), noting
    the rows each layer was asked for."""

    def __init__(self, dims=(6, 5, 4, 3), seed=0):
        rng = np.random.default_rng(seed)
        self.weights = [(rng.normal(size=(a, b)).astype(np.float32), rng.normal(size=(a, b)).astype(np.float32))
                        for a, b in zip(dims[:-1], dims[1:])]
        self.calls = []

    def __call__(self, layer, rows, inputs, graph):
        self.calls.append((layer, rows.copy()))
        if not len(rows):
            return None
        own, neighbours = self.weights[layer]
        return np.tanh(inputs[rows] @ own + neighbour_mean_rows(graph, rows, inputs) @ neighbours)


def _run(graph, features, plan, previous=None, tolerance=0.0, changed=None, neighbours=None):
    n = len(plan.order)
    layers = MeanLayers()
    none = np.zeros(n, bool)
    done = propagate(layers, 3, graph, features, plan, none if changed is None else changed,
                     none if neighbours is None else neighbours, previous, tolerance)
    return done, layers


def _states(done):
    return LayerStates([o.copy() for o in done.states.outputs], [d.copy() for d in done.states.drift],
                       done.states.scales)


def test_a_full_run_computes_every_row_of_every_layer():
    graph = _graph(60, 300)
    features = np.random.default_rng(1).normal(size=(60, 6)).astype(np.float32)
    done, layers = _run(graph, features, _same_keys(60))
    assert done.recomputed == [60, 60, 60] and [len(rows) for _, rows in layers.calls] == [60, 60, 60]
    assert np.isinf(done.shift).all() and done.written.tolist() == list(range(60))
    assert len(done.states.scales) == 3 and done.states.scales[0] > 0


def test_tolerance_zero_recomputes_the_exact_closure_and_equals_a_full_run():
    graph, plan = _path(12), _same_keys(12)
    features = np.random.default_rng(2).normal(size=(12, 6)).astype(np.float32)
    before, _ = _run(graph, features, plan)
    edited = features.copy()
    edited[5] += 0.5
    changed = np.zeros(12, bool)
    changed[5] = True
    done, layers = _run(graph, edited, plan, _states(before), changed=changed)
    # layer l recomputes the nodes within l + 1 hops of node 5
    assert [rows.tolist() for _, rows in layers.calls] == [[4, 5, 6], [3, 4, 5, 6, 7], [2, 3, 4, 5, 6, 7, 8]]
    full, _ = _run(graph, edited, plan)
    for ours, theirs in zip(done.states.outputs, full.states.outputs):
        np.testing.assert_allclose(ours, theirs, atol=1e-6)
    # the embedding (layer 1's output) moved for nodes 3..7 only; those and layer 2's movers are written
    assert np.flatnonzero(done.shift > 0).tolist() == [3, 4, 5, 6, 7]
    assert done.written.tolist() == [2, 3, 4, 5, 6, 7, 8]
    assert all((d == 0).all() for d in done.states.drift)


def test_changes_below_the_tolerance_accumulate_as_drift_until_they_pass_it():
    graph, plan = _path(12), _same_keys(12)
    features = np.random.default_rng(3).normal(size=(12, 6)).astype(np.float32)
    before, _ = _run(graph, features, plan)
    changed = np.zeros(12, bool)
    changed[5] = True
    edited = features.copy()
    edited[5] += 0.01
    tolerance = 1.0  # far above a 0.01 change: nothing past layer 0
    done, layers = _run(graph, edited, plan, _states(before), tolerance=tolerance, changed=changed)
    assert done.recomputed == [3, 0, 0]
    drift = done.states.drift[1]
    assert np.flatnonzero(drift > 0).tolist() == [3, 4, 5, 6, 7]  # the movers and their neighbours
    # the same drift, pushed past the tolerance: the next run recomputes those nodes at layer 1
    states = _states(done)
    states.drift[1][drift > 0] += tolerance * states.scales[1]
    again, layers = _run(graph, edited, plan, states, tolerance=tolerance)
    assert again.recomputed[0] == 0 and layers.calls[1][1].tolist() == [3, 4, 5, 6, 7]
    assert (again.states.drift[1] == 0).all()


def test_a_new_node_and_a_changed_neighbour_set_are_recomputed_in_every_layer():
    old_graph, new_graph = _path(10), _path(11)
    features = np.random.default_rng(4).normal(size=(11, 6)).astype(np.float32)
    before, _ = _run(old_graph, features[:10], _same_keys(10))
    plan = plan_slots(pa.array([f"k{i}" for i in range(10)]), pa.array([f"k{i}" for i in range(11)]))
    previous = LayerStates([carried(o, plan) for o in before.states.outputs],
                           [carried(d, plan) for d in before.states.drift], before.states.scales)
    neighbours = np.zeros(11, bool)
    neighbours[9] = True  # node 9 gained node 10
    done, layers = _run(new_graph, features, plan, previous, tolerance=1e9, neighbours=neighbours)
    assert [rows.tolist() for _, rows in layers.calls] == [[9, 10], [9, 10], [9, 10]]
    assert np.isinf(done.shift[10]) and 10 in done.written.tolist()


def test_moved_measures_unit_vector_shift_of_recomputed_rows_only():
    plan = plan_slots(pa.array(["a", "b", "c"]), pa.array(["a", "b", "c", "d"]))
    now = np.array([[1, 0], [0, 2], [3, 3], [1, 1]], np.float32)
    before = np.array([[0, 1], [0, 1]], np.float32)  # rows 0 and 1 as they were
    shift, changed = moved(now, (np.array([0, 1]), before), plan)
    np.testing.assert_allclose(shift[:3], [np.sqrt(2), 0, 0], rtol=1e-6)  # row 1 only grew: same direction
    assert np.isinf(shift[3]) and changed.tolist() == [0, 1, 3]
    full_shift, every = moved(now, None, plan)
    assert np.isinf(full_shift).all() and every.tolist() == [0, 1, 2, 3]
