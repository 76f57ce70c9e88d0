import gzip
import json

import pytest
from click.testing import CliRunner

from graphsvc.errors import DumpFormatError
from graphsvc.store import open_store
from graphsvc.store.dumps import write_dump
from jobs.cli import cli
from jobs.restore_dumps import restore_dumps


def test_seed_workshop_dump_restores_exactly(shared_fixtures, tmp_path):
    store_path = tmp_path / "store.duckdb"
    result = CliRunner().invoke(cli, ["--store", str(store_path), "restore-dumps",
                                      str(shared_fixtures / "seed_workshop_dump"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    rows = {c["collection"]: c for c in summary["collections"]}
    assert rows["Users"]["written"] == 943 and rows["Users"]["kind"] == "document"
    assert rows["Ratings"]["written"] == 65_499 and rows["Ratings"]["kind"] == "edge"
    for empty in ("imdb_vertices", "imdb_edges"):
        assert rows[empty]["written"] == 0 and rows[empty]["status"] == "empty: no data file"
        assert f"warning: {empty}: no data file" in result.stderr
    with open_store(str(store_path)) as store:
        counts = {c.name: (c.kind, c.count) for c in store.collections()}
        assert counts == {
            "Users": ("document", 943),
            "Ratings": ("edge", 65_499),
            "imdb_vertices": ("document", 0),
            "imdb_edges": ("edge", 0),
        }
        edge = store.get_documents("Ratings", [store.select_keys("Ratings")[0]])[0]
        assert edge["_from"].startswith("Users/") and edge["_to"].startswith("imdb_vertices/")


def test_imdb_example_dump_gives_the_named_graph(shared_fixtures, tmp_path):
    with open_store(str(tmp_path / "s.duckdb"), create=True) as store:
        summary = restore_dumps(store, [shared_fixtures / "imdb_example_dump"])
        assert summary.graphs == ["imdb"]
        (graph,) = store.graphs()
        assert graph.edge_definitions[0].collection == "imdb_edges"
        assert graph.edge_definitions[0].from_collections == ("imdb_vertices",)
        assert not store.has_collection("_graphs")


def test_restoring_twice_upserts_without_duplicates(tmp_path):
    dump = write_dump(tmp_path / "d", "db", [("things", "document", [{"_key": "a", "v": 1}, {"_key": "b", "v": 2}])])
    with open_store(str(tmp_path / "s.duckdb"), create=True) as store:
        restore_dumps(store, [dump])
        restore_dumps(store, [dump])
        assert store.collection("things").count == 2


def _corrupt_dump(tmp_path):
    dump = write_dump(tmp_path / "bad", "db", [("things", "document", [{"_key": str(i)} for i in range(5)])])
    data = next(dump.glob("things_*.data.json.gz"))
    lines = gzip.decompress(data.read_bytes()).splitlines()
    lines[3] = b'{"_key": "3", broken'
    data.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    return dump, data


def test_a_bad_line_stops_the_restore_before_anything_is_written(tmp_path):
    good = write_dump(tmp_path / "good", "db", [("others", "document", [{"_key": "x"}])])
    bad, data_file = _corrupt_dump(tmp_path)
    with open_store(str(tmp_path / "s.duckdb"), create=True) as store:
        store.create_collection("things")
        store.upsert_documents("things", [{"_key": "kept", "v": 1}])
        with pytest.raises(DumpFormatError, match=rf"{data_file.name} line 4"):
            restore_dumps(store, [good, bad])
        assert store.select_keys("things") == ["kept"]
        assert not store.has_collection("others")


def test_cli_errors_are_one_line_with_nonzero_exit(tmp_path):
    bad, data_file = _corrupt_dump(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    runner = CliRunner()
    store = ["--store", str(tmp_path / "s.duckdb")]
    for directory, expected in [
        (bad, f"{data_file.name} line 4"),
        (empty, "holds no arangodump files"),
        (tmp_path / "absent", "absent"),
    ]:
        result = runner.invoke(cli, [*store, "restore-dumps", str(directory)])
        assert result.exit_code == 1, result.output
        assert expected in result.stderr
        assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
