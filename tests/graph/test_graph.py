import numpy as np
import pyarrow as pa

from graphsvc.graph import CSRGraph, NeighbourSampler, edges_to_positions, sample_neighbours


def _edges(pairs):
    return pa.record_batch(
        [pa.array([f"products/{a}" for a, _ in pairs], pa.string()),
         pa.array([f"products/{b}" for _, b in pairs], pa.string())],
        names=["_from", "_to"],
    )


def test_edges_map_to_key_positions_and_dangling_are_counted():
    keys = ["a", "b", "c"]
    batch = _edges([("a", "b"), ("c", "a"), ("a", "zz")])
    foreign = pa.record_batch([pa.array(["users/1"]), pa.array(["products/a"])], names=["_from", "_to"])
    indexed = edges_to_positions(keys, [batch, foreign], "products")
    assert indexed.source.tolist() == [0, 2]
    assert indexed.target.tolist() == [1, 0]
    assert indexed.dangling == 2


def test_edges_looked_up_in_groups_give_the_same_positions():
    keys = ["a", "b", "c"]
    batches = [_edges([("a", "b"), ("c", "zz")]), _edges([]), _edges([("b", "c")]), _edges([("c", "a"), ("a", "a")])]
    whole = edges_to_positions(keys, batches, "products")
    grouped = edges_to_positions(keys, batches, "products", group_rows=2)
    assert grouped.source.tolist() == whole.source.tolist() == [0, 1, 2, 0]
    assert grouped.target.tolist() == whole.target.tolist() == [1, 2, 0, 0]
    assert grouped.dangling == whole.dangling == 1
    assert edges_to_positions(keys, [], "products").dangling == 0


def test_csr_is_symmetric_sorted_and_without_duplicates_or_self_loops():
    graph = CSRGraph.from_edges(np.array([0, 0, 1, 2, 2]), np.array([1, 1, 2, 2, 0]), num_nodes=4)
    assert graph.indptr.tolist() == [0, 2, 4, 6, 6]
    assert [graph.neighbours(i).tolist() for i in range(4)] == [[1, 2], [0, 2], [0, 1], []]
    assert graph.degree().tolist() == [2, 2, 2, 0]


def test_rows_of_some_nodes_in_their_order():
    graph = _random_graph(num_nodes=300, num_edges=3000, seed=4)
    indptr, indices = graph.rows(np.array([5, 2]))
    assert indices.tolist() == graph.neighbours(5).tolist() + graph.neighbours(2).tolist()
    assert indptr.tolist() == [0, graph.degree()[5], graph.degree()[5] + graph.degree()[2]]


def _random_graph(num_nodes=500, num_edges=5000, seed=1):
    rng = np.random.default_rng(seed)
    return CSRGraph.from_edges(rng.integers(0, num_nodes, num_edges), rng.integers(0, num_nodes, num_edges), num_nodes)


def test_sample_neighbours_draws_distinct_real_neighbours_up_to_fanout():
    graph = _random_graph()
    nodes = np.arange(0, 500, 7)
    owners, picked = sample_neighbours(graph, nodes, 5, np.random.default_rng(0))
    for position, node in enumerate(nodes):
        mine = picked[owners == position]
        assert len(mine) == min(5, graph.degree()[node])
        assert len(set(mine.tolist())) == len(mine)
        assert set(mine.tolist()) <= set(graph.neighbours(node).tolist())


def test_sampling_is_roughly_uniform_over_neighbours():
    graph = CSRGraph.from_edges(np.zeros(20, np.int64), np.arange(1, 21), 21)
    rng = np.random.default_rng(0)
    counts = np.zeros(21)
    for _ in range(2000):
        _, picked = sample_neighbours(graph, np.array([0]), 5, rng)
        counts[picked] += 1
    # each neighbour is drawn with probability 1/4: 500 expected of 2000
    assert counts[1:].min() > 400 and counts[1:].max() < 600


def test_subgraph_orders_nodes_by_hop_and_sizes_cover_each_layer():
    graph = _random_graph()
    sampler = NeighbourSampler(graph, [4, 3, 2], seed=3)
    targets = np.array([10, 20, 30])
    sub = sampler.sample(targets, batch_number=7)
    assert sub.nodes[:3].tolist() == [10, 20, 30]
    assert len(set(sub.nodes.tolist())) == len(sub.nodes)
    assert sub.sizes[-1] == 3 and sub.sizes[0] <= len(sub.nodes)
    assert list(sub.sizes) == sorted(sub.sizes, reverse=True)
    source, target = sub.edge_index
    # every sampled edge is a real edge of the graph
    for s, t in zip(sub.nodes[source], sub.nodes[target]):
        assert s in graph.neighbours(t)
    # every node a layer computes has its messages from rows the previous layer computed
    assert source[target < sub.sizes[1]].max() < sub.sizes[0]
    # the same batch number gives the same subgraph
    again = sampler.sample(targets, batch_number=7)
    assert np.array_equal(again.nodes, sub.nodes) and np.array_equal(again.edge_index, sub.edge_index)


def test_full_fanout_reaches_the_whole_connected_neighbourhood():
    graph = CSRGraph.from_edges(np.array([0, 1, 2, 3]), np.array([1, 2, 3, 4]), 6)
    sub = NeighbourSampler(graph, [-1, -1], seed=0).sample(np.array([0]))
    assert sorted(sub.nodes.tolist()) == [0, 1, 2]
    assert sub.sizes.tolist() == [2, 1]


def test_neighbour_mean_averages_each_nodes_neighbours():
    from graphsvc.graph import NeighbourMean

    graph = CSRGraph.from_edges(np.array([0, 0, 1]), np.array([1, 2, 2]), num_nodes=4)
    rows = np.array([[1.0, 0.0], [3.0, 2.0], [5.0, 4.0], [7.0, 7.0]], np.float32)
    mean = NeighbourMean(graph)(rows)
    assert np.allclose(mean, [[4.0, 3.0], [3.0, 2.0], [2.0, 1.0], [0.0, 0.0]])


def test_csr_is_int32_when_node_ids_fit_and_int64_beyond():
    from graphsvc.graph import index_dtype

    graph = _random_graph()
    assert graph.indptr.dtype == graph.indices.dtype == np.int32
    assert index_dtype(2**31 - 1) == np.int32 and index_dtype(10, 2**31) == np.int64


def test_csr_built_in_small_chunks_equals_one_chunk():
    rng = np.random.default_rng(2)
    source, target = rng.integers(0, 40, 700), rng.integers(0, 40, 700)
    whole = CSRGraph.from_edges(source, target, 40)
    chunked = CSRGraph.from_edges(source, target, 40, chunk=7)
    assert np.array_equal(whole.indptr, chunked.indptr) and np.array_equal(whole.indices, chunked.indices)
    # the same adjacency as a plain set of undirected pairs
    pairs = {(a, b) for a, b in zip(source.tolist(), target.tolist()) if a != b}
    pairs |= {(b, a) for a, b in pairs}
    assert whole.num_edges == len(pairs)
    assert all((row, column) in pairs for row in range(40) for column in whole.neighbours(row).tolist())


def test_each_layers_adjacency_holds_the_edges_into_the_nodes_it_computes():
    graph = _random_graph()
    sub = NeighbourSampler(graph, [4, 3, 2], seed=3).sample(np.array([10, 20, 30, 40]), batch_number=1)
    source, target = sub.edge_index
    for layer in range(3):
        indptr, columns, inputs = sub.adjacency(layer)
        rows = int(sub.sizes[layer])
        assert len(indptr) == rows + 1 and inputs == (sub.sizes[layer - 1] if layer else len(sub.nodes))
        into = target < rows
        expected = sorted(zip(target[into].tolist(), source[into].tolist()))
        got = sorted((row, column) for row in range(rows) for column in columns[indptr[row]:indptr[row + 1]].tolist())
        assert got == expected and columns.max() < inputs


def test_sampled_subgraph_does_not_depend_on_the_relabelling_route():
    # few new nodes are sorted, many are marked in a graph-sized map: the same subgraph
    graph = _random_graph()
    sampler = NeighbourSampler(graph, [5, 5], seed=1)
    sub = sampler.sample(np.arange(0, 200, 3), batch_number=4)
    sampler._reached = np.zeros(10**7, bool)  # makes every hop take the sorting route
    sorted_route = sampler.sample(np.arange(0, 200, 3), batch_number=4)
    assert np.array_equal(sub.nodes, sorted_route.nodes) and np.array_equal(sub.edge_index, sorted_route.edge_index)
