import numpy as np
import pyarrow as pa

from graphsvc.graph import EdgeIndexing
from graphsvc.incremental.slots import plan_slots
from graphsvc.incremental.snapshot import Snapshot
from graphsvc.incremental.targets import MoviesTarget, ProductsTarget, PulledProducts, TextInputs


def _products(features, edges, keys):
    edges = np.asarray(edges)
    return PulledProducts(pa.array(keys), features, EdgeIndexing(edges[:, 0], edges[:, 1], 0), 0)


def test_products_diff_sees_changed_features_and_neighbour_sets_in_slot_order(tmp_path):
    keys = ["a", "b", "c", "d"]
    features = np.arange(12, dtype=np.float32).reshape(4, 3)
    target = ProductsTarget("products", "bought_together", "features", 0.01)
    pulled = _products(features, [[0, 1], [1, 2], [2, 3]], keys)
    plan = plan_slots(None, pulled.keys)
    diff = target.diff(pulled.in_slots(plan), None, plan)
    snapshot = Snapshot.save(tmp_path, {}, pulled.keys.take(pa.array(plan.order)), diff.hashes)

    # tonight pulled in another order: c's features changed, d gained a neighbour (a)
    edited = features[[2, 0, 1, 3]].copy()
    edited[0, 1] += 1  # c
    tonight = _products(edited, [[1, 2], [2, 0], [0, 3], [3, 1]], ["c", "a", "b", "d"])
    plan = plan_slots(snapshot.keys, tonight.keys)
    inputs = tonight.in_slots(plan)
    assert inputs.keys.to_pylist() == keys
    diff = target.diff(inputs, snapshot, plan)
    assert np.flatnonzero(diff.features_changed).tolist() == [2]
    assert np.flatnonzero(diff.neighbours_changed).tolist() == [0, 3]
    assert diff.counts == {"features_changed": 1, "neighbour_sets_changed": 2, "edges": 4, "dangling_edges": 0}
    estimate = target.estimate(inputs, diff, plan, full=False)
    assert estimate["would_recompute_layer0"] == 4 and estimate["within_3_hops"] == 4


class FakeTextRunner:
    """Embeds a text as its length and word count, noting the texts it was given."""

    def __init__(self):
        self.seen = []

    def text_step(self, journal):
        def embed_texts(texts):
            self.seen.append(list(texts))
            return np.array([[len(t), len(t.split())] for t in texts], np.float32) if texts else None
        return embed_texts


def test_movies_embed_only_changed_and_new_texts_through_the_runner(tmp_path):
    target = MoviesTarget("movies", "description", "title", "sentence_encoder")
    runner = FakeTextRunner()
    first = TextInputs(pa.array(["m1", "m2", "m3"]), ["a ghost", "a chess game", "rain"], 0)
    plan = plan_slots(None, first.keys)
    inputs = first.in_slots(plan)
    diff = target.diff(inputs, None, plan)
    result = target.embed(inputs, diff, None, plan, True, runner, journal=None)
    assert result.re_embedded == 3 and np.isinf(result.shift).all()
    snapshot = Snapshot.save(tmp_path, {}, inputs.keys, {**diff.hashes, **result.arrays})

    tonight = TextInputs(pa.array(["m1", "m2", "m3", "m4"]), ["a ghost", "a chess game!", "rain", "snow"], 0)
    plan = plan_slots(snapshot.keys, tonight.keys)
    inputs = tonight.in_slots(plan)
    diff = target.diff(inputs, snapshot, plan)
    assert diff.counts == {"texts_changed": 1, "skipped_without_text": 0}
    result = target.embed(inputs, diff, snapshot, plan, False, runner, journal=None)
    assert runner.seen[-1] == ["a chess game!", "snow"]
    assert result.re_embedded == 2 and result.recomputed_per_layer == [2]
    assert result.embedding.tolist() == [[7, 2], [13, 3], [4, 1], [4, 1]]
    assert result.written.tolist() == [1, 3] and np.isinf(result.shift[3]) and result.shift[[0, 2]].tolist() == [0, 0]
