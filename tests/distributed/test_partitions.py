"""graphsvc.distributed.partitions: node ranges of a locality-aware order, and each
partition's halo (the distinct neighbours it needs from other partitions)."""

from __future__ import annotations

import numpy as np
import pytest

from graphsvc.distributed.partitions import default_partitions, node_order, partition_graph, partition_rows
from graphsvc.graph.aggregation import neighbour_mean_rows
from graphsvc.graph.csr import CSRGraph


def graph_of(edges, n):
    edges = np.array(edges)
    return CSRGraph.from_edges(edges[:, 0], edges[:, 1], n)


PATH = graph_of([(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)], 6)
# two triangles, evens and odds, bridged by 4-1: key order interleaves them
TRIANGLES = graph_of([(0, 2), (2, 4), (4, 0), (1, 3), (3, 5), (5, 1), (4, 1)], 6)


def test_a_path_cut_in_two_key_ranges_needs_one_node_from_each_side():
    parts = partition_graph(PATH, 2, order="key").parts
    assert [p.owned.tolist() for p in parts] == [[0, 1, 2], [3, 4, 5]]
    assert [p.halo.tolist() for p in parts] == [[3], [2]]
    assert parts[0].sends[1].tolist() == [2] and parts[1].sends[0].tolist() == [0]  # positions in `owned`
    assert parts[0].sends[0].tolist() == [] and parts[1].sends[1].tolist() == []


def test_breadth_first_order_keeps_each_triangle_in_one_partition():
    assert node_order(TRIANGLES, "bfs").tolist() == [0, 2, 4, 1, 3, 5]
    by_key = partition_graph(TRIANGLES, 2, order="key")
    assert [p.halo.tolist() for p in by_key.parts] == [[3, 4, 5], [0, 1, 2]]
    by_bfs = partition_graph(TRIANGLES, 2, order="bfs")
    assert [p.owned.tolist() for p in by_bfs.parts] == [[0, 2, 4], [1, 3, 5]]
    assert [p.halo.tolist() for p in by_bfs.parts] == [[1], [4]]
    assert by_bfs.summary(6)["halo"] == [1, 1] and by_key.summary(6)["halo_share"] == 1.0


def test_the_halo_is_grouped_by_owner_and_lists_each_neighbour_once():
    # a star: every leaf's partition needs the centre, the centre's needs every other leaf
    star = graph_of([(0, i) for i in range(1, 7)], 7)
    parts = partition_graph(star, 3, order="key").parts
    assert [p.owned.tolist() for p in parts] == [[0, 1], [2, 3], [4, 5, 6]]
    assert [p.halo.tolist() for p in parts] == [[2, 3, 4, 5, 6], [0], [0]]
    assert parts[0].halo_owners.tolist() == [0, 0, 2, 5]  # 2, 3 from partition 1; 4, 5, 6 from partition 2
    assert [s.tolist() for s in parts[0].sends] == [[], [0], [0]]
    assert [s.tolist() for s in parts[1].sends] == [[0, 1], [], []]
    assert [s.tolist() for s in parts[2].sends] == [[0, 1, 2], [], []]


def test_breadth_first_order_covers_every_component_and_isolated_node():
    graph = graph_of([(0, 3), (3, 5), (1, 4)], 7)  # nodes 2 and 6 have no edges
    order = node_order(graph, "bfs")
    assert order.tolist() == [0, 3, 5, 1, 4, 2, 6]
    parts = partition_graph(graph, 3).parts
    assert sorted(np.concatenate([p.owned for p in parts]).tolist()) == list(range(7))


def test_local_rows_give_the_same_neighbour_means_as_the_whole_graph():
    rng = np.random.default_rng(0)
    n = 300
    edges = rng.integers(0, n, size=(900, 2))
    graph = CSRGraph.from_edges(edges[:, 0], edges[:, 1], n)
    values = rng.normal(size=(n, 5)).astype(np.float32)
    partitioning = partition_graph(graph, 4)
    for part in partitioning.parts:
        # the rows a partition holds: its own, then the pieces its halo's owners send it, in owner order
        pieces = [values[other.owned[other.sends[part.number]]] for other in partitioning.parts
                  if other.number != part.number]
        local = np.concatenate([values[part.owned], *pieces])
        np.testing.assert_array_equal(local, values[part.nodes])
        np.testing.assert_allclose(neighbour_mean_rows(part.local_graph, np.arange(len(part.owned)), local),
                                   neighbour_mean_rows(graph, part.owned, values), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("nodes, actors, expected", [(1000, 2, 4), (5_000_000, 2, 5), (1, 1, 2)])
def test_default_partitions_are_two_per_actor_and_one_per_million_nodes(nodes, actors, expected):
    assert default_partitions(nodes, actors) == expected


def test_a_subset_of_rows_splits_into_ranges_each_with_the_neighbours_it_reads():
    rng = np.random.default_rng(1)
    n = 300
    edges = rng.integers(0, n, size=(900, 2))
    graph = CSRGraph.from_edges(edges[:, 0], edges[:, 1], n)
    values = rng.normal(size=(n, 5)).astype(np.float32)
    rows = rng.choice(n, size=80, replace=False)
    for order in ("bfs", "key"):
        parts = partition_rows(graph, rows, 3, order).parts
        assert len(parts) == 3 and [len(p.owned) for p in parts] == [26, 27, 27]
        assert sorted(np.concatenate([p.owned for p in parts]).tolist()) == sorted(rows.tolist())
        for part in parts:
            assert part.sends == () and part.halo_owners.tolist() == [0, len(part.halo)]
            assert not set(part.halo.tolist()) & set(part.owned.tolist())
            # the rows routed to it (own, then halo) give the whole graph's neighbour means
            np.testing.assert_allclose(neighbour_mean_rows(part.local_graph, np.arange(len(part.owned)),
                                                           values[part.nodes]),
                                       neighbour_mean_rows(graph, part.owned, values), rtol=1e-6, atol=1e-6)
    assert [p.owned.tolist() for p in partition_rows(PATH, np.array([4, 1, 2]), 2, "key").parts] == [[1], [2, 4]]
    assert [p.halo.tolist() for p in partition_rows(PATH, np.array([4, 1, 2]), 2, "key").parts] == [[0, 2], [1, 3, 5]]
    assert len(partition_rows(PATH, np.array([3]), 4).parts) == 1
