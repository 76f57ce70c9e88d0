"""Finding the per-layer models on Triton, and the sampled and text paths over the
batch loop (with stand-in models: the jobs' tests run them on a real server)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from graphsvc.errors import ModelRepositoryError
from graphsvc.graph import CSRGraph
from graphsvc.inference.runners import layer_models
from graphsvc.inference.sampled import embed_sampled
from graphsvc.models.graphsage import EMBEDDING, LOGITS, SIZES, X
from graphsvc.runs import RunJournal


class Server:
    url = "grpc://localhost:1"

    def __init__(self, *names: str):
        self._names = names

    def models(self):
        return [SimpleNamespace(name=name) for name in self._names]


def test_layer_models_are_the_consecutive_layers_the_server_has():
    server = Server("graphsage_layer1", "graphsage_layer0", "graphsage_layer3", "graphsage")
    assert layer_models(server, "graphsage") == ["graphsage_layer0", "graphsage_layer1"]


def test_no_layer_models_is_an_error_saying_how_to_export_them():
    with pytest.raises(ModelRepositoryError, match=r"serves no 'graphsage_layer0' — export the per-layer models "
                                                   r"with 'jobs export-models' \(or use --mode sampled\)"):
        layer_models(Server("graphsage"), "graphsage", hint="or use --mode sampled")


def test_sampled_batches_come_back_in_node_order_and_are_journaled(tmp_path):
    rng = np.random.default_rng(0)
    graph = CSRGraph.from_edges(rng.integers(0, 50, 200), rng.integers(0, 50, 200), 50)
    features = rng.standard_normal((50, 3), dtype=np.float32)

    def targets_features(requests):  # a model whose embedding is each target's own features
        for request in requests:
            own = request[X][: int(request[SIZES][-1])]
            yield {EMBEDDING: own, LOGITS: own[:, :2], "other": own}

    journal = RunJournal(tmp_path / "run")
    embedding, logits = embed_sampled(graph, features, targets_features, "graphsage", fanouts=(3, 2),
                                      batch_size=16, journal=journal)
    np.testing.assert_array_equal(embedding, features)
    np.testing.assert_array_equal(logits, features[:, :2])
    assert sorted(p.name for p in journal.directory.iterdir()) == [f"S-B{b}.npz" for b in range(4)]
