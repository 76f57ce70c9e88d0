"""The seed-scale pipeline at 20,000 products: `bench/seed_scale.py` runs every step as
the real command (synth → restore → train → export → Triton → embed → serve → reindex →
evaluate), each in its own process; the figures it reports are checked here."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import REPO_ROOT

NODES, EDGES = 20_000, 500_000


@pytest.fixture(scope="module")
def seed_scale(tmp_path_factory):
    work = tmp_path_factory.mktemp("seed-scale")
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "seed_scale.py"), "--nodes", str(NODES), "--edges", str(EDGES),
         "--work", str(work), "--queries", "60", "--json"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout), done.stderr, work


def test_the_generated_dump_restores_completely(seed_scale):
    figures, _, work = seed_scale
    written = {c["collection"]: c["written"] for c in figures["restore"]["collections"]}
    assert written == {"products": NODES, "bought_together": EDGES}
    assert len(list((work / "dump").glob("bought_together_*.data.json.gz"))) > 1  # split files, as arangodump writes


def test_training_on_the_catalogue_learns_but_does_not_saturate(seed_scale):
    figures, _, _ = seed_scale
    assert figures["train"]["split"]["sizes"]["train"] == pytest.approx(0.08 * NODES, rel=0.05)
    accuracy = figures["train"]["accuracy"]["test"]
    assert 2 / 47 < accuracy < 0.99  # above chance, below the old sample's 1.000


def test_every_product_is_embedded_with_top_10_lists_matching_exact_search(seed_scale):
    figures, _, _ = seed_scale
    assert figures["embed_products"]["embedded"] == NODES
    assert figures["recall"]["similar_recall_at_10"] >= 0.95  # the written-back lists against brute force


def test_fields_queries_are_answered_with_the_fields(seed_scale):
    serve = seed_scale[0]["serve"]
    assert serve["hits_with_fields"] == 10 * serve["requests"]
    assert 0 < serve["p50_ms"] <= serve["p99_ms"]


def test_reindex_after_one_percent_changed_is_incremental(seed_scale):
    reindex = seed_scale[0]["reindex"]
    assert reindex["full"]["mode"] == "full"
    assert reindex["night"]["mode"] == "incremental"
    assert reindex["changed"] == NODES // 100
    assert 0 < reindex["night"]["re_embedded"] < NODES


def test_the_table_reports_seconds_and_peak_rss_per_step(seed_scale):
    figures, table, _ = seed_scale
    names = [step["name"] for step in figures["steps"]]
    for name in ("synth", "restore-dumps", "train-graphsage", "export-models", "embed-products", "evaluate"):
        assert name in names
        assert name in table
    assert all(step["peak_rss_mb"] > 0 for step in figures["steps"] if step["peak_rss_mb"] is not None)
    assert "restore → embed → first query" in table
    assert figures["evaluate"]["num_nodes"] == NODES
