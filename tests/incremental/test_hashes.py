import numpy as np

from graphsvc.graph import CSRGraph
from graphsvc.incremental.hashes import fingerprint, neighbour_hashes, row_hashes, text_hashes


def test_row_hashes_see_a_one_ulp_change_and_swapped_columns():
    x = np.random.default_rng(4).standard_normal((500, 64)).astype(np.float32)
    h = row_hashes(x)
    assert len(np.unique(h)) == 500
    assert (row_hashes(x.copy()) == h).all()
    y = x.copy()
    y[5, 7] = np.nextafter(y[5, 7], np.float32(10))
    y[9, [1, 2]] = y[9, [2, 1]]
    assert np.flatnonzero(row_hashes(y) != h).tolist() == [5, 9]


def test_neighbour_hashes_see_the_set_of_neighbours_not_their_order():
    edges = np.array([[0, 1], [0, 2], [0, 3], [3, 4]])
    graph = CSRGraph.from_edges(edges[:, 0], edges[:, 1], 5)
    reordered = CSRGraph.from_edges(edges[::-1, 0], edges[::-1, 1], 5)
    identity = np.arange(5, dtype=np.uint64)
    h = neighbour_hashes(graph, identity)
    assert (neighbour_hashes(reordered, identity) == h).all()
    # node 4 renamed: only the nodes whose neighbour set holds it change
    renamed = identity.copy()
    renamed[4] = 99
    assert np.flatnonzero(neighbour_hashes(graph, renamed) != h).tolist() == [3]
    # one more edge: both its ends have another neighbour set
    more = CSRGraph.from_edges(np.append(edges[:, 0], 1), np.append(edges[:, 1], 4), 5)
    assert np.flatnonzero(neighbour_hashes(more, identity) != h).tolist() == [1, 4]


def test_text_hashes_differ_per_text_and_fingerprint_sees_every_array_value():
    h = text_hashes(["a film", "a film ", "a film"])
    assert h[0] == h[2] != h[1]
    values = np.arange(5000, dtype=np.uint64)
    edited = values.copy()
    edited[2500] += 1
    assert fingerprint(values, "x") == fingerprint(values.copy(), "x") != fingerprint(edited, "x")
