"""The `graphsvc` and `jobs` CLIs: help everywhere, one-line errors with non-zero exits."""

import numpy as np
import pytest
from click.testing import CliRunner

from graphsvc.cli import cli as graphsvc_cli
from graphsvc.index.artifacts import publish
from graphsvc.index.faiss_index import VectorIndex
from graphsvc.store import open_store
from jobs.cli import cli as jobs_cli


def _commands(group, prefix=()):
    for name, command in group.commands.items():
        yield (*prefix, name)
        if hasattr(command, "commands"):
            yield from _commands(command, (*prefix, name))


@pytest.mark.parametrize("cli", [graphsvc_cli, jobs_cli])
def test_every_command_has_help(cli):
    runner = CliRunner()
    for path in [(), *_commands(cli)]:
        result = runner.invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output and "--help" in result.output


@pytest.fixture
def indexed(tmp_path):
    """A store with three products and a published index over two of them."""
    store_path = tmp_path / "store.duckdb"
    with open_store(str(store_path), create=True) as store:
        store.create_collection("products")
        store.upsert_documents("products", [
            {"_key": "a", "category": 1}, {"_key": "b", "category": 1}, {"_key": "c", "category": 2},
        ])
    vectors = np.array([[1, 0], [0.9, 0.1], [0, 1]], np.float32)
    publish(tmp_path / "indexes", "products", VectorIndex.build(vectors[:2]), ["a", "b"],
            model={"name": "m", "version": "1"})
    return ["--store", str(store_path), "--index-dir", str(tmp_path / "indexes")]


def _error(args):
    result = CliRunner().invoke(graphsvc_cli, args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def test_similar_answers_from_the_index(indexed):
    result = CliRunner().invoke(graphsvc_cli, [*indexed, "similar", "products/a", "-k", "1"])
    assert result.exit_code == 0, result.output
    assert result.stdout.split()[:3] == ["1", "b", "0.9939"]
    assert "category=1" in result.stdout


def test_unknown_key_is_named(indexed):
    assert "'products/zz' does not exist" in _error([*indexed, "similar", "products/zz"])


def test_document_missing_from_the_index_says_to_rerun_the_job(indexed):
    assert "rerun 'jobs embed-products'" in _error([*indexed, "similar", "products/c"])


def test_missing_index_is_named(indexed, tmp_path):
    message = _error(["--store", indexed[1], "--index-dir", str(tmp_path / "none"), "similar", "products/a"])
    assert "no published index for 'products'" in message


def test_missing_store_is_named(tmp_path):
    message = _error(["--store", str(tmp_path / "nope.duckdb"), "similar", "products/a"])
    assert "nope.duckdb does not exist" in message
    assert not (tmp_path / "nope.duckdb").exists()


def test_malformed_document_argument(indexed):
    assert "is not COLLECTION/KEY" in _error([*indexed, "similar", "products"])


def test_corrupt_index_is_refused(indexed, tmp_path):
    index_file = next((tmp_path / "indexes" / "products").glob("v*/index.faiss"))
    index_file.write_bytes(index_file.read_bytes()[:-8] + b"corrupt!")
    assert "index.faiss" in _error([*indexed, "similar", "products/a"])
