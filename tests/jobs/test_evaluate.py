"""`jobs evaluate` on a small sample graph: the numbers, the honesty of the held-out
edges, the published index against exact search, and the report files."""

from __future__ import annotations

import json
import shutil

import matplotlib.image
import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

from graphsvc.evaluation.ranking import cosine_scorer, held_out_queries, link_recall_at_k
from graphsvc.graph import CSRGraph
from graphsvc.graph.datasets import load_node_graph
from graphsvc.graph.splits import hold_out_edges
from graphsvc.index.artifacts import publish
from graphsvc.index.faiss_index import VectorIndex, l2_normalise
from graphsvc.inference.layerwise import embed_layerwise
from graphsvc.models.graphsage import GraphSAGE, load_checkpoint, save_checkpoint
from graphsvc.store import open_store
from jobs.cli import cli
from jobs.evaluate import EvaluateConfig, evaluate
from jobs.synth import ProductGraphSpec
from jobs.train import TrainingConfig, train_graphsage
from tests.jobs.sample_graphs import restored_store

SPEC = ProductGraphSpec(num_products=1000, num_categories=8, seed=11)
TRAINING = TrainingConfig(hidden=32, num_layers=2, fanouts=(10, 10), batch_size=64, epochs=6, seed=1)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    store_path = restored_store(root, SPEC)
    checkpoint = root / "graphsage.pth.tar"
    with open_store(str(store_path)) as store:
        metrics = train_graphsage(store, checkpoint, config=TRAINING)
        report = evaluate(store, root / "indexes", EvaluateConfig(checkpoint=checkpoint, out=root / "report"))
    return {"root": root, "store": store_path, "checkpoint": checkpoint, "metrics": metrics, "report": report}


def test_embeddings_find_held_out_edges_better_than_raw_features_and_chance(trained):
    link = trained["report"]["link_prediction"]
    rankings = link["rankings"]
    assert link["held_out_edges"] == trained["metrics"]["holdout_edges"]["count"] > 0
    assert rankings["embeddings"]["queries"] == min(2000, 2 * link["held_out_edges"])
    embedding, raw, chance = (rankings[n]["recall_at_k"] for n in ("embeddings", "raw features", "random"))
    assert embedding > 2 * raw
    assert embedding > 3 * rankings["random"]["expected_random"]
    assert chance < 4 * rankings["random"]["expected_random"] + 0.005
    assert link["embeddings_over_raw_features"] == pytest.approx(embedding / raw, rel=1e-2)


def test_embeddings_that_saw_the_held_out_edges_would_flatter_the_recall(trained):
    # why the report computes embeddings on the graph without the held-out edges
    with open_store(str(trained["store"])) as store:
        data = load_node_graph(store, "products", "bought_together", label="category")
    model, _ = load_checkpoint(trained["checkpoint"])
    holdout = hold_out_edges(data.graph, data.keys, 0.1, seed=TRAINING.seed)
    queries = held_out_queries(holdout.held_out, 2000, seed=0)
    honest, _ = embed_layerwise(model, holdout.graph, data.features)
    leaky, _ = embed_layerwise(model, data.graph, data.features)
    honest_recall = link_recall_at_k(cosine_scorer(honest), holdout.graph, queries)["recall_at_k"]
    leaky_recall = link_recall_at_k(cosine_scorer(leaky), holdout.graph, queries)["recall_at_k"]
    assert honest_recall == trained["report"]["link_prediction"]["rankings"]["embeddings"]["recall_at_k"]
    assert leaky_recall > honest_recall


def test_category_accuracy_per_split_uses_the_training_split(trained):
    accuracy = trained["report"]["category_accuracy"]
    sizes = trained["metrics"]["split"]["sizes"]
    assert {name: row["count"] for name, row in accuracy["splits"].items()} == sizes
    assert accuracy["splits"]["test"]["accuracy"] > 0.8
    assert "nothing written back" in accuracy["source"]
    assert trained["report"]["notes"] == []


def test_report_files_are_json_html_and_valid_pngs(trained):
    out = trained["root"] / "report"
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["link_prediction"] == trained["report"]["link_prediction"]
    assert on_disk["num_nodes"] == SPEC.num_products and on_disk["k"] == 10
    html = (out / "index.html").read_text()
    assert set(on_disk["figures"]) == {"accuracy", "link_recall", "projection", "training"}
    for figure in on_disk["figures"].values():
        path = out / figure["file"]
        assert path.read_bytes()[:8] == PNG_MAGIC
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
        assert f'src="{figure["file"]}"' in html
    projection = on_disk["figures"]["projection"]
    assert projection["method"] == "PCA" and projection["sample"] == SPEC.num_products
    assert 0 < projection["explained_variance"][1] <= projection["explained_variance"][0] < 1
    assert on_disk["index"]["skipped"].startswith("no published index for 'products'")


def _copy(trained, tmp_path):
    store = tmp_path / "store.duckdb"
    shutil.copy(trained["store"], store)
    return store


def test_written_back_predictions_are_what_gets_scored(trained, tmp_path):
    store_path = _copy(trained, tmp_path)
    with open_store(str(store_path)) as store:
        data = load_node_graph(store, "products", "bought_together", label="category")
        keys = data.keys
        store.update_attributes("products", pa.table({
            "_key": keys,
            "embedding": pa.array(list(np.eye(len(keys), 4, dtype=np.float32)), pa.list_(pa.float32())),
            "predicted_category": pa.array(np.zeros(len(keys), np.int64)),
        }))
        report = evaluate(store, tmp_path / "indexes", EvaluateConfig(checkpoint=trained["checkpoint"],
                                                                      out=tmp_path / "report"))
    assert "written back" in report["category_accuracy"]["source"]
    splits = report["category_accuracy"]["splits"]
    assert {name: row["count"] for name, row in splits.items()} == trained["metrics"]["split"]["sizes"]
    # every written-back prediction says category 0: exactly the category-0 nodes are right
    everything = sum(r["accuracy"] * r["count"] for r in report["category_accuracy"]["splits"].values())
    assert round(everything) == int((data.labels == 0).sum())


def test_index_recall_is_exact_for_flat_and_measured_for_ivf(trained, tmp_path):
    with open_store(str(trained["store"])) as store:
        data = load_node_graph(store, "products", "bought_together", label="category")
    model, _ = load_checkpoint(trained["checkpoint"])
    embeddings, _ = embed_layerwise(model, data.graph, data.features)
    config = EvaluateConfig(checkpoint=trained["checkpoint"], out=tmp_path / "report", index_sample=SPEC.num_products,
                            link_queries=50)

    publish(tmp_path / "flat", "products", VectorIndex.build(embeddings, kind="flat"), data.keys,
            model={"name": "t", "version": 1})
    with open_store(str(trained["store"])) as store:
        flat = evaluate(store, tmp_path / "flat", config)["index"]
    assert flat["kind"] == "flat" and flat["recall_at_k"] == 1.0 and flat["sample"] == SPEC.num_products

    ivf = VectorIndex.build(embeddings, kind="ivf", nlist=32, nprobe=1)
    publish(tmp_path / "ivf", "products", ivf, data.keys, model={"name": "t", "version": 1})
    with open_store(str(trained["store"])) as store:
        measured = evaluate(store, tmp_path / "ivf", config)["index"]
    # brute force, independently: every stored vector as a query, its own id left out
    normalised = l2_normalise(embeddings)
    scores = normalised @ normalised.T
    np.fill_diagonal(scores, -np.inf)
    exact = np.argsort(-scores, axis=1)[:, :10]
    _, found = ivf.search(embeddings, 11)
    recall = np.mean([len(set(e) & (set(f) - {i})) / 10
                      for i, (e, f) in enumerate(zip(exact.tolist(), found.tolist()))])
    assert measured["kind"] == "ivf" and measured["nprobe"] == 1 and measured["nlist"] == 32
    assert measured["recall_at_k"] == pytest.approx(recall, abs=0.01)
    assert measured["recall_at_k"] < 1.0


def test_checkpoint_without_training_metrics_says_what_it_assumed(trained, tmp_path):
    checkpoint = tmp_path / "bare.pth.tar"
    shutil.copy(trained["checkpoint"], checkpoint)
    result = CliRunner().invoke(cli, ["--store", str(trained["store"]), "--index-dir", str(tmp_path / "none"),
                                      "evaluate", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "r"),
                                      "--link-queries", "200"])
    assert result.exit_code == 0, result.output
    assert "no training metrics" in result.stderr and "may have trained with them" in result.stderr
    assert result.stdout.splitlines()[0].startswith("category accuracy train")
    assert "recall@10 of" in result.stdout and str(tmp_path / "r" / "index.html") in result.stdout
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert len(report["notes"]) == 2 and report["link_prediction"]["rankings"]["embeddings"]["queries"] == 200
    assert "may have trained with them" in (tmp_path / "r" / "index.html").read_text()


def test_checkpoint_for_other_features_is_a_one_line_error(trained, tmp_path):
    checkpoint = tmp_path / "wide.pth.tar"
    save_checkpoint(checkpoint, GraphSAGE(50, 8, 4, 2), epoch=1, best_acc=0.5)
    result = CliRunner().invoke(cli, ["--store", str(trained["store"]), "evaluate", "--checkpoint", str(checkpoint),
                                      "--out", str(tmp_path / "r")])
    assert result.exit_code == 1
    assert result.stderr.strip() == (f"error: {checkpoint} expects 50 features per node; "
                                     "'products.features' has 100")
    assert not (tmp_path / "r" / "report.json").exists()


def test_known_neighbours_and_the_query_itself_are_not_candidates():
    # 0 knows 1; 0 must find 5. Scores put 0 itself, then 1, then 5 on top
    known = CSRGraph.from_edges(np.array([0, 2]), np.array([1, 3]), 6)
    scores = np.array([9.0, 8.0, 1.0, 1.0, 1.0, 7.0], np.float32)
    found = link_recall_at_k(lambda rows: np.tile(scores, (len(rows), 1)), known, np.array([[0, 5]]), k=1)
    assert found["recall_at_k"] == 1.0 and found["hits"] == 1
    # ties count against the node to find: a constant score finds nothing
    flat = link_recall_at_k(lambda rows: np.ones((len(rows), 6), np.float32), known, np.array([[0, 5]]), k=1)
    assert flat["recall_at_k"] == 0.0
    assert flat["expected_random"] == pytest.approx(1 / 4)
