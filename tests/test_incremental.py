import numpy as np

from graphsvc.graph import CSRGraph, NeighbourMean
from graphsvc.incremental import mean_change, neighbour_mean_rows


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
