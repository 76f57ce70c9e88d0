"""Movie → movie relation means through feature-less nodes (people)."""

from __future__ import annotations

import numpy as np

from graphsvc.graph.relations import Memberships, MovieRelations, two_hop_mean


def dense(rows) -> np.ndarray:
    out = np.zeros((rows.num_rows, rows.num_columns))
    for r in range(rows.num_rows):
        out[r, rows.indices[rows.indptr[r]:rows.indptr[r + 1]]] = rows.weights[rows.indptr[r]:rows.indptr[r + 1]]
    return out


def test_two_hop_mean_averages_each_persons_other_movies_leaving_the_movie_itself_out():
    # person 0 made movies 0, 1, 2; person 1 made movies 0 and 3; person 2 only movie 4
    links = Memberships(np.array([0, 1, 2, 0, 3, 4, 0]), np.array([0, 0, 0, 1, 1, 2, 0]))  # a duplicate link
    matrix = dense(two_hop_mean(links, 5))
    # movie 0: mean over person 0 (mean of 1, 2) and person 1 (movie 3)
    np.testing.assert_allclose(matrix[0], [0, 0.25, 0.25, 0.5, 0])
    np.testing.assert_allclose(matrix[1], [0.5, 0, 0.5, 0, 0])
    np.testing.assert_allclose(matrix[3], [1, 0, 0, 0, 0])
    assert not matrix[4].any()  # a person with no other movie says nothing
    assert np.all(np.diag(matrix) == 0)


def test_neighbour_means_stack_the_relations_and_rows_give_the_same_numbers():
    rng = np.random.default_rng(0)
    relations = MovieRelations.build(
        ["directed_by", "acted_in", "absent"],
        {"directed_by": Memberships(rng.integers(0, 30, 40), rng.integers(0, 8, 40)),
         "acted_in": Memberships(rng.integers(0, 30, 90), rng.integers(0, 25, 90))}, 30)
    values = rng.normal(size=(30, 4)).astype(np.float32)
    whole = relations.neighbour_means(None, values)
    assert whole.shape == (30, 12) and not whole[:, 8:].any()  # a relation the graph lacks is all zeros
    np.testing.assert_allclose(whole[:, :4], dense(relations.means[0]) @ values, atol=1e-5)
    rows = np.array([7, 2, 19])
    np.testing.assert_allclose(relations.neighbour_means(rows, values), whole[rows], atol=1e-6)


def test_row_hashes_change_only_for_movies_whose_relation_rows_change():
    links = Memberships(np.array([0, 1, 2, 3, 4]), np.array([0, 0, 0, 1, 1]))
    before = MovieRelations.build(["r"], {"r": links}, 6)
    # movie 5 joins person 1: the rows of 3 and 4 (person 1's movies) change, 0-2 do not
    after = MovieRelations.build(["r"], {"r": Memberships(np.append(links.movies, 5), np.append(links.vias, 1))}, 6)
    changed = before.row_hashes() != after.row_hashes()
    assert changed.tolist() == [False, False, False, True, True, True]
    assert before.neighbours(np.array([3])).tolist() == [False, False, False, True, True, False]
