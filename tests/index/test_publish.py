"""The embed jobs' tail: index → write back embedding, similar and the job's columns →
publish, each phase timed, the summary's index part from what was published."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from graphsvc.index.artifacts import load_current
from graphsvc.index.publish import publish_embeddings
from graphsvc.runs.timing import PhaseTimer
from graphsvc.store import open_store


def test_embeddings_are_written_back_with_similar_lists_and_the_index_published(tmp_path):
    keys = [f"p{i}" for i in range(40)]
    vectors = np.random.default_rng(0).standard_normal((40, 8)).astype(np.float32)
    timer = PhaseTimer()
    with open_store(str(tmp_path / "store.duckdb"), create=True) as store:
        store.create_collection("products")
        store.upsert_documents("products", [{"_key": key} for key in keys])
        published = publish_embeddings(
            store, tmp_path / "indexes", "products", pa.array(keys), vectors, job="embed-products",
            model={"name": "graphsage", "version": "1"}, top_k=3, timer=timer,
            columns={"predicted_category": pa.array(np.arange(40) % 4)}, manifest={"mode": "layerwise"})
        stored = store.get_documents("products", ["p7"])[0]

    assert set(timer.seconds) == {"index", "write_back", "publish"}
    assert len(stored["similar"]) == 3 and stored["predicted_category"] == 3
    np.testing.assert_allclose(stored["embedding"], vectors[7], atol=1e-6)
    current = load_current(tmp_path / "indexes", "products")
    assert current.manifest.extra["job"] == "embed-products" and current.manifest.extra["mode"] == "layerwise"
    assert current.manifest.extra["top_k"] == 3 and current.manifest.model == {"name": "graphsage", "version": "1"}
    summary = published.summary()
    assert summary["dimension"] == 8 and summary["index_version"] == current.version
    assert summary["index_kind"] == current.index.kind and summary["arangodb_vector_index"] is None
