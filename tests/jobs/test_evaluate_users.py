"""`jobs evaluate users` on the workshop's own ratings (943 users, 65,499 Ratings edges):
the acceptance of issue 15 — the user tower beats popularity and item-kNN on hit rate@10
and NDCG@10, same split, same run."""

from __future__ import annotations

import json

from click.testing import CliRunner

from jobs.cli import cli


def test_user_tower_beats_popularity_and_item_knn_on_the_workshop_ratings(shared_fixtures, tmp_path):
    store = str(tmp_path / "store.duckdb")
    restored = CliRunner().invoke(cli, ["--store", store, "restore-dumps", str(shared_fixtures / "seed_workshop_dump"),
                                        "--json"])
    assert restored.exit_code == 0, restored.output
    result = CliRunner().invoke(cli, ["--store", store, "evaluate", "users", "--out", str(tmp_path / "report"),
                                      "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    methods = report["methods"]
    assert report["num_users"] == 943 and report["num_ratings"] == 65_332  # 167 repeated ratings: the later kept
    assert {row["users"] for row in methods.values()} == {912}  # users with two or more ratings
    ours = methods["user tower"]
    for baseline in ("popularity", "item-kNN"):
        assert ours["hit_rate"] > methods[baseline]["hit_rate"] and ours["ndcg"] > methods[baseline]["ndcg"]
    assert report["user_tower_beats_both"] is True
    assert len(report["item_knn_tuning"]["validation"]) == 18  # the grid item-kNN was tuned over
    html = (tmp_path / "report" / "index.html").read_text()
    assert "Hit rate@10 and NDCG@10 of held-out ratings" in html and "item-kNN" in html
