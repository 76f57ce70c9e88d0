"""graphsvc.store.dumps.write: the deterministic, atomic writer, read back by the reader."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from graphsvc.store.base import EdgeDefinition, GraphInfo
from graphsvc.store.dumps import iter_operations, open_dump, read_graphs, write_dump
from tests.store.dumps.dump_files import md5

PEOPLE = [{"_key": "alice", "name": "Alice", "type": "person", "tags": ["ä", "b"]},
          {"_key": "bob", "name": "Bob", "age": 42}]
KNOWS = [{"_key": "1", "_from": "people/alice", "_to": "people/bob", "since": 2020}]
GRAPH = GraphInfo("social", (EdgeDefinition("knows", ("people",), ("people",)),))


def write_sample(directory: Path, **kwargs) -> Path:
    return write_dump(
        directory, "socialdb",
        [("people", "document", iter(PEOPLE)), ("knows", "edge", iter(KNOWS))],
        graphs=[GRAPH], **kwargs,
    )


@pytest.mark.parametrize("envelope", [False, True], ids=["plain", "envelope"])
@pytest.mark.parametrize("compress", [True, False], ids=["gz", "json"])
def test_write_then_read_round_trip(tmp_path, envelope, compress):
    target = tmp_path / "out"
    assert write_sample(target, envelope=envelope, compress=compress) == target

    suffix = ".data.json.gz" if compress else ".data.json"
    names = sorted(p.name for p in target.iterdir())
    assert names == sorted([
        "ENCRYPTION", "dump.json",
        *(f"{n}_{md5(n)}.structure.json" for n in ("people", "knows", "_graphs")),
        *(f"{n}_{md5(n)}{suffix}" for n in ("people", "knows", "_graphs")),
    ])
    assert (target / "ENCRYPTION").read_text() == "none"
    meta = json.loads((target / "dump.json").read_text())
    assert meta["database"] == "socialdb" and meta["useEnvelope"] is envelope

    data = (target / f"people_{md5('people')}{suffix}").read_bytes()
    assert data.startswith(b"\x1f\x8b") == compress
    first_line = json.loads((gzip.decompress(data) if compress else data).splitlines()[0])
    assert ("data" in first_line) == envelope

    dump = open_dump(target)
    assert dump.database == "socialdb"
    assert [(c.name, c.kind) for c in dump.collections] == [
        ("_graphs", "document"), ("people", "document"), ("knows", "edge")
    ]
    assert [op.document for op in iter_operations(dump.collection("people"))] == PEOPLE
    assert [op.document for op in iter_operations(dump.collection("knows"))] == KNOWS
    assert read_graphs(dump) == [GRAPH]


def test_write_empty_collection_and_no_graphs(tmp_path):
    target = write_dump(tmp_path / "out", "db", [("empty", "edge", [])])
    dump = open_dump(target)
    assert [(c.name, c.kind, len(c.data_files)) for c in dump.collections] == [("empty", "edge", 1)]
    assert list(iter_operations(dump.collection("empty"))) == []
    assert read_graphs(dump) == []


def test_write_dump_is_deterministic(tmp_path):
    a = write_sample(tmp_path / "a")
    b = write_sample(tmp_path / "b")
    files_a = {p.name: p.read_bytes() for p in a.iterdir()}
    files_b = {p.name: p.read_bytes() for p in b.iterdir()}
    assert files_a == files_b
    # key order is kept as given, with compact separators
    plain = write_sample(tmp_path / "c", compress=False)
    line = (plain / f"people_{md5('people')}.data.json").read_text(encoding="utf-8").splitlines()[0]
    assert line == '{"_key":"alice","name":"Alice","type":"person","tags":["ä","b"]}'


def test_write_dump_replaces_existing_directory(tmp_path):
    target = tmp_path / "out"
    write_dump(target, "old", [("stale", "document", [{"_key": "s"}])])
    (target / "leftover.txt").write_text("x")
    write_sample(target)
    assert not (target / "leftover.txt").exists()
    assert [c.name for c in open_dump(target).collections] == ["_graphs", "people", "knows"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp siblings left


def test_failed_write_leaves_previous_dump_intact(tmp_path):
    target = write_sample(tmp_path / "out")
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def documents():
        yield {"_key": "ok"}
        raise RuntimeError("source failed mid-stream")

    with pytest.raises(RuntimeError, match="mid-stream"):
        write_dump(target, "other", [("people", "document", documents())])
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("collections", [
    [("c", "document", [{"name": "no key"}])],
    [("e", "edge", [{"_key": "1", "_from": "a/1"}])],
    [("c", "vertex", [])],
    [("c", "document", []), ("c", "document", [])],
    [("../x", "document", [])],
])
def test_write_dump_rejects_bad_input(tmp_path, collections):
    with pytest.raises(ValueError):
        write_dump(tmp_path / "out", "db", collections)
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []
