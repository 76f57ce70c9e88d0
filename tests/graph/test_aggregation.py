import numpy as np

from graphsvc.graph import CSRGraph, NeighbourMean, neighbour_mean_rows


def _graph(num_nodes: int = 300, num_edges: int = 2_000) -> CSRGraph:
    rng = np.random.default_rng(0)
    return CSRGraph.from_edges(rng.integers(0, num_nodes, num_edges), rng.integers(0, num_nodes, num_edges), num_nodes)


def test_neighbour_mean_rows_equals_the_whole_graph_product_for_those_rows():
    graph = _graph()
    values = np.random.default_rng(0).normal(size=(graph.num_nodes, 16)).astype(np.float32)
    rows = np.array([5, 0, 299, 17, 17])
    np.testing.assert_allclose(neighbour_mean_rows(graph, rows, values), NeighbourMean(graph)(values)[rows], atol=1e-6)
