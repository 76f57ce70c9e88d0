"""The one query path: the CLI and the HTTP service give the same answer to the same
question, and the CLI's default fields are the documents' short scalar attributes."""

from __future__ import annotations

import functools
import json

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from graphsvc.cli import cli
from graphsvc.index.artifacts import load_current
from graphsvc.service.app import ServiceConfig, create_app
from graphsvc.service.errors import BadRequest
from graphsvc.service.queries import SHORT_FIELDS, NotInIndex, SimilarityQueries, field_names
from graphsvc.store.embedded import EmbeddedStore


def queries_over(catalogue) -> SimilarityQueries:
    return SimilarityQueries(functools.partial(load_current, catalogue.index_dir),
                             lambda: EmbeddedStore(catalogue.store, create=False, read_only=True))


def test_the_cli_and_the_http_service_answer_a_filtered_query_with_fields_alike(catalogue):
    spec = {"category": {"in": ["Books", "Toys"]}, "price": {"lt": 30}}
    cli_answer = CliRunner().invoke(cli, [
        "--store", str(catalogue.store), "--index-dir", str(catalogue.index_dir), "similar", "products/P00007",
        "-k", "6", "--json", "--fields", "category,price", "--filter", json.dumps(spec)])
    assert cli_answer.exit_code == 0, cli_answer.output
    config = ServiceConfig(index_dir=str(catalogue.index_dir), store=str(catalogue.store))
    with TestClient(create_app(config)) as client:
        http_answer = client.get("/v1/products/P00007/similar",
                                 params={"k": 6, "fields": "category,price", "filter": json.dumps(spec)})
    assert http_answer.status_code == 200, http_answer.text
    assert json.loads(cli_answer.stdout) == http_answer.json()
    assert http_answer.json()["query"] == {"key": "P00007", "k": 6, "filter": spec}
    assert len(http_answer.json()["hits"]) == 6


def test_short_fields_are_the_short_scalar_attributes_of_each_hit(catalogue):
    answer = queries_over(catalogue).similar("products", "P00003", k=4, fields=SHORT_FIELDS)
    assert len(answer.hits) == 4 and "P00003" not in [h.key for h in answer.hits]
    for hit in answer.hits:
        document = catalogue.documents[hit.key]
        assert hit.fields == {"title": document["title"], "category": document["category"], "price": document["price"]}


def test_keys_and_scores_alone_need_no_store(catalogue):
    def no_store():
        raise AssertionError("the store was opened")

    queries = SimilarityQueries(functools.partial(load_current, catalogue.index_dir), no_store)
    by_key = queries.similar("products", "P00011", k=5)
    by_vector = queries.search("products", vector=catalogue.vectors[11].tolist(), k=6)
    assert [h.key for h in by_vector.hits] == ["P00011"] + [h.key for h in by_key.hits]
    assert by_key.to_dict()["hits"][0] == {"_key": by_key.hits[0].key, "score": round(by_key.hits[0].score, 6)}
    with pytest.raises(NotInIndex, match="'products/NOPE' is not in index version 1 of 'products'"):
        queries.similar("products", "NOPE")


def test_field_lists_are_split_on_commas_and_bounded():
    assert field_names(" title, ,category ") == ["title", "category"]
    assert field_names("") is None and field_names(" , ") is None
    with pytest.raises(BadRequest, match="at most 32 fields"):
        field_names(",".join(f"f{i}" for i in range(33)))
