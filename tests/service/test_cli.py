"""`graphsvc similar --filter` and `--explain-aql` on a real store and index."""

from __future__ import annotations

import json

from click.testing import CliRunner

from graphsvc.cli import cli
from tests.service.conftest import exact_top


def invoke(catalogue, *args):
    return CliRunner().invoke(cli, ["--store", str(catalogue.store), "--index-dir", str(catalogue.index_dir), *args])


def test_similar_with_a_filter_returns_k_matching_hits(catalogue):
    result = invoke(catalogue, "similar", "products/P00007", "-k", "8", "--json", "--fields", "category",
                    "--filter", '{"category": "Garden"}')
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)["hits"]
    allowed = {k for k, d in catalogue.documents.items() if d["category"] == "Garden"}
    assert [h["_key"] for h in hits] == exact_top(catalogue, catalogue.vectors[7], 8, allowed, "P00007")
    assert {h["category"] for h in hits} == {"Garden"}


def test_a_bad_filter_is_one_line_and_exit_1(catalogue):
    result = invoke(catalogue, "similar", "products/P00007", "--filter", '{"price": {"between": [1, 2]}}')
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: filter on 'price': unknown operator 'between' (use eq, ne, lt, lte, gt, gte, in)"
    )


def test_explain_aql_needs_no_store_and_prints_bind_parameters(catalogue):
    result = CliRunner().invoke(cli, ["--store", "/nonexistent/store.duckdb", "--index-dir", str(catalogue.index_dir),
                                      "similar", "products/P00007", "--explain-aql", "-k", "3"])
    assert result.exit_code == 0, result.output
    text, bind = result.stdout.split("// bind parameters (python-arango bind_vars / arangosh bindVars):\n")
    assert "SORT score DESC" in text and "FILTER hit._key != @key" in text
    bind = json.loads(bind)
    assert bind["k"] == 3 and bind["limit"] == 4 and len(bind["query_vector"]) == 16
