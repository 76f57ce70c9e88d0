"""Tests for graphsvc.store.dumps: reading real arangodump fixtures, edge cases of the
line formats, and the deterministic, atomic writer."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest

from graphsvc.errors import DumpFormatError
from graphsvc.store.base import EdgeDefinition, GraphInfo
from graphsvc.store.dumps import (
    DumpCollection,
    iter_operation_batches,
    iter_operations,
    open_dump,
    read_graphs,
    write_dump,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT.parent / "shared" / "fixtures"


def fixture_dir(name: str) -> Path:
    path = FIXTURES / name
    if not path.is_dir():
        pytest.skip(f"real fixture {name} not available ({FIXTURES} is absent in a fresh clone)")
    return path


def md5(name: str) -> str:
    return hashlib.md5(name.encode()).hexdigest()


def write_structure(directory: Path, name: str, type_: int = 2, hashed: bool = True, layout: str = "modern") -> Path:
    stem = f"{name}_{md5(name)}" if hashed else name
    if layout == "modern":
        content = {"indexes": [{"id": "0", "type": "primary", "fields": ["_key"]}],
                   "parameters": {"name": name, "type": type_, "isSystem": name.startswith("_")}}
    else:  # old dump layouts keep name/type at the top level
        content = {"name": name, "type": type_, "indexes": []}
    path = directory / f"{stem}.structure.json"
    path.write_text(json.dumps(content))
    return path


def write_lines(path: Path, lines: list[str]) -> Path:
    data = "".join(line + "\n" for line in lines).encode()
    if path.name.endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def ops_of(collection: DumpCollection) -> list[tuple[str, str | None, dict | None]]:
    return [(op.op, op.key, op.document) for op in iter_operations(collection)]


# --------------------------------------------------------------------------- real fixtures


def test_seed_workshop_dump_layout():
    dump = open_dump(fixture_dir("seed_workshop_dump"))
    assert dump.database == "TUTaj4nivujhxflikf1qisx2"
    # documents first, then edges, each by name
    assert [(c.name, c.kind) for c in dump.collections] == [
        ("Users", "document"),
        ("imdb_vertices", "document"),
        ("Ratings", "edge"),
        ("imdb_edges", "edge"),
    ]
    assert dump.collection("imdb_vertices").data_files == ()
    assert dump.collection("imdb_edges").data_files == ()
    assert [p.name for p in dump.collection("Users").data_files] == [f"Users_{md5('Users')}.data.json.gz"]
    assert dump.collection("Users").structure_path.name == "Users.structure.json"
    assert not any(c.is_system for c in dump.collections)
    assert list(iter_operations(dump.collection("imdb_vertices"))) == []


def test_seed_workshop_users_and_ratings():
    dump = open_dump(fixture_dir("seed_workshop_dump"))

    users = list(iter_operations(dump.collection("Users")))
    assert len(users) == 943
    assert all(op.op == "upsert" and op.key == op.document["_key"] for op in users)
    assert len({op.key for op in users}) == 943
    first = users[0]
    assert first.line == 1 and first.path.name.startswith("Users_")
    # the envelope is unwrapped, and the document's own "type" attribute survives
    assert first.document["type"] == "User" and "data" not in first.document

    count = 0
    for op in iter_operations(dump.collection("Ratings")):
        assert op.op == "upsert"
        assert op.document["_from"].startswith("Users/")
        assert op.document["_to"].startswith("imdb_vertices/")
        count += 1
    assert count == 65_499
    assert op.line == 65_499


def test_seed_workshop_batches():
    dump = open_dump(fixture_dir("seed_workshop_dump"))
    sizes = [len(b) for b in iter_operation_batches(dump.collection("Users"), batch_size=300)]
    assert sizes == [300, 300, 300, 43]


def test_imdb_example_dump_older_layout_and_graphs():
    directory = fixture_dir("imdb_example_dump")
    dump = open_dump(directory)
    assert dump.database == "IMDB"
    assert [(c.name, c.kind, c.is_system) for c in dump.collections] == [
        ("_graphs", "document", True),
        ("imdb_vertices", "document", False),
        ("imdb_edges", "edge", False),
    ]
    # names come from the structure content, not from the hashed file name
    assert dump.collection("imdb_edges").structure_path.name == f"imdb_edges_{md5('imdb_edges')}.structure.json"
    assert dump.collection("imdb_vertices").data_files == ()
    assert read_graphs(dump) == [
        GraphInfo("imdb", (EdgeDefinition("imdb_edges", ("imdb_vertices",), ("imdb_vertices",)),))
    ]


# --------------------------------------------------------------------------- layout


def test_empty_directory_is_rejected(tmp_path):
    with pytest.raises(DumpFormatError, match=r"holds no arangodump files \(no \*\.structure\.json\)"):
        open_dump(tmp_path)


def test_missing_directory_is_rejected(tmp_path):
    with pytest.raises(DumpFormatError, match="not a directory"):
        open_dump(tmp_path / "nope")


def test_encrypted_dump_is_refused(tmp_path):
    write_structure(tmp_path, "C")
    (tmp_path / "ENCRYPTION").write_text("aes-256-ctr")
    with pytest.raises(DumpFormatError) as err:
        open_dump(tmp_path)
    message = str(err.value)
    assert "encrypted" in message and "--encryption.keyfile" in message and "ENCRYPTION" in message


@pytest.mark.parametrize("content", ["none", "none\n", ""])
def test_unencrypted_marker_is_accepted(tmp_path, content):
    write_structure(tmp_path, "C")
    (tmp_path / "ENCRYPTION").write_text(content)
    assert [c.name for c in open_dump(tmp_path).collections] == ["C"]


def test_no_dump_json_and_old_structure_layout(tmp_path):
    write_structure(tmp_path, "People", type_=2, hashed=False, layout="old")
    write_structure(tmp_path, "knows", type_=3, hashed=False, layout="old")
    write_lines(tmp_path / "People.data.json", ['{"_key":"a"}'])
    dump = open_dump(tmp_path)
    assert dump.database is None
    assert [(c.name, c.kind) for c in dump.collections] == [("People", "document"), ("knows", "edge")]
    assert dump.collection("People").indexes == ()
    assert ops_of(dump.collection("People")) == [("upsert", "a", {"_key": "a"})]
    assert dump.collection("knows").data_files == ()


def test_indexes_are_kept_as_is(tmp_path):
    write_structure(tmp_path, "C")
    assert open_dump(tmp_path).collection("C").indexes == ({"id": "0", "type": "primary", "fields": ["_key"]},)


def test_unknown_collection_raises_dump_format_error(tmp_path):
    write_structure(tmp_path, "C")
    with pytest.raises(DumpFormatError, match="no collection 'D'"):
        open_dump(tmp_path).collection("D")


def test_bad_structure_type_is_rejected(tmp_path):
    write_structure(tmp_path, "C", type_=7)
    with pytest.raises(DumpFormatError, match="type 7"):
        open_dump(tmp_path)


def test_data_file_without_structure_is_rejected(tmp_path):
    write_structure(tmp_path, "C")
    write_lines(tmp_path / f"D_{md5('D')}.data.json", ['{"_key":"a"}'])
    with pytest.raises(DumpFormatError, match="no matching structure"):
        open_dump(tmp_path)


def test_split_files_are_read_in_numeric_order(tmp_path):
    write_structure(tmp_path, "C")
    stem = f"C_{md5('C')}"
    # mixed compression, and n=10 must come after n=2 (not lexicographic)
    write_lines(tmp_path / f"{stem}.10.data.json", ['{"_key":"k10"}'])
    write_lines(tmp_path / f"{stem}.2.data.json.gz", ['{"_key":"k2a"}', '{"_key":"k2b"}'])
    write_lines(tmp_path / f"{stem}.1.data.json.gz", ['{"_key":"k1"}'])
    write_structure(tmp_path, "U", hashed=False)
    write_lines(tmp_path / "U.3.data.json", ['{"_key":"u3"}'])
    write_lines(tmp_path / "U.0.data.json", ['{"_key":"u0"}'])

    dump = open_dump(tmp_path)
    c = dump.collection("C")
    assert [p.name for p in c.data_files] == [
        f"{stem}.1.data.json.gz", f"{stem}.2.data.json.gz", f"{stem}.10.data.json"
    ]
    assert [op.key for op in iter_operations(c)] == ["k1", "k2a", "k2b", "k10"]
    assert [(op.path.name, op.line) for op in iter_operations(c)][1:3] == [
        (f"{stem}.2.data.json.gz", 1), (f"{stem}.2.data.json.gz", 2)
    ]
    assert [op.key for op in iter_operations(dump.collection("U"))] == ["u0", "u3"]


def test_duplicate_data_files_are_rejected(tmp_path):
    write_structure(tmp_path, "C")
    write_lines(tmp_path / f"C_{md5('C')}.data.json", ['{"_key":"a"}'])
    write_lines(tmp_path / f"C_{md5('C')}.data.json.gz", ['{"_key":"a"}'])
    with pytest.raises(DumpFormatError, match="duplicates data file"):
        open_dump(tmp_path)


# --------------------------------------------------------------------------- line formats


def test_markers_2301_and_2302(tmp_path):
    write_structure(tmp_path, "C")
    write_lines(tmp_path / f"C_{md5('C')}.data.json", [
        '{"type":2300,"data":{"_key":"a","v":1}}',
        '{"type":2301,"key":"b","rev":"_x","data":{"v":2}}',
        '{"type":2301,"key":"c","rev":"_y","data":{"_key":"c","v":3}}',
        '{"type":2302,"key":"a","rev":"_z"}',
        '{"type":2302,"data":{"_key":"c"}}',
    ])
    assert ops_of(open_dump(tmp_path).collection("C")) == [
        ("upsert", "a", {"_key": "a", "v": 1}),
        ("upsert", "b", {"_key": "b", "v": 2}),
        ("upsert", "c", {"_key": "c", "v": 3}),
        ("remove", "a", None),
        ("remove", "c", None),
    ]


def test_plain_document_with_type_attribute_is_not_an_envelope(tmp_path):
    write_structure(tmp_path, "C")
    write_lines(tmp_path / f"C_{md5('C')}.data.json", [
        '{"_key":"x","type":"movie"}',
        '{"_key":"y","type":2300,"data":{"nested":true}}',
        '{"_key":"z","type":2302,"key":"other"}',
    ])
    assert ops_of(open_dump(tmp_path).collection("C")) == [
        ("upsert", "x", {"_key": "x", "type": "movie"}),
        ("upsert", "y", {"_key": "y", "type": 2300, "data": {"nested": True}}),
        ("upsert", "z", {"_key": "z", "type": 2302, "key": "other"}),
    ]


def test_blank_lines_are_skipped_and_line_numbers_count_them(tmp_path):
    write_structure(tmp_path, "C")
    write_lines(tmp_path / f"C_{md5('C')}.data.json", ['{"_key":"a"}', "", "   ", '{"_key":"b"}'])
    ops = list(iter_operations(open_dump(tmp_path).collection("C")))
    assert [(op.key, op.line) for op in ops] == [("a", 1), ("b", 4)]


@pytest.mark.parametrize("suffix", [".data.json", ".data.json.gz"])
def test_invalid_json_line_names_file_and_line(tmp_path, suffix):
    write_structure(tmp_path, "C")
    name = f"C_{md5('C')}{suffix}"
    write_lines(tmp_path / name, ['{"_key":"a"}', '{"_key":"b"}', '{"_key": oops'])
    ops = iter_operations(open_dump(tmp_path).collection("C"))
    assert next(ops).key == "a"  # streaming: earlier lines come out before the error
    with pytest.raises(DumpFormatError) as err:
        list(ops)
    assert name in str(err.value) and "line 3" in str(err.value)
    assert err.value.line == 3


@pytest.mark.parametrize("line", ['[1,2]', '"text"', "42"])
def test_non_object_line_is_rejected(tmp_path, line):
    write_structure(tmp_path, "C")
    write_lines(tmp_path / f"C_{md5('C')}.data.json", [line])
    with pytest.raises(DumpFormatError, match="line 1: expected a JSON object"):
        list(iter_operations(open_dump(tmp_path).collection("C")))


def test_document_without_key_is_rejected(tmp_path):
    write_structure(tmp_path, "C")
    write_lines(tmp_path / f"C_{md5('C')}.data.json", ['{"_key":"a"}', '{"v":1}'])
    with pytest.raises(DumpFormatError, match="line 2: document has no string '_key'"):
        list(iter_operations(open_dump(tmp_path).collection("C")))


def test_unknown_marker_type_is_rejected(tmp_path):
    write_structure(tmp_path, "C")
    write_lines(tmp_path / f"C_{md5('C')}.data.json", ['{"type":2001,"data":{"name":"C"}}'])
    with pytest.raises(DumpFormatError, match="unsupported marker type 2001"):
        list(iter_operations(open_dump(tmp_path).collection("C")))


def test_truncated_gzip_is_a_dump_format_error(tmp_path):
    write_structure(tmp_path, "C")
    payload = gzip.compress("".join(json.dumps({"_key": str(i), "pad": "x" * 50}) + "\n"
                                    for i in range(5000)).encode())
    path = tmp_path / f"C_{md5('C')}.data.json.gz"
    path.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(DumpFormatError) as err:
        list(iter_operations(open_dump(tmp_path).collection("C")))
    assert path.name in str(err.value) and "gzip" in str(err.value)
    assert err.value.line is not None and err.value.line > 1


def test_garbage_gz_file_is_a_dump_format_error(tmp_path):
    write_structure(tmp_path, "C")
    path = tmp_path / f"C_{md5('C')}.data.json.gz"
    path.write_bytes(b"this is not gzip at all\n")
    with pytest.raises(DumpFormatError, match=r"line 1: corrupt gzip stream"):
        list(iter_operations(open_dump(tmp_path).collection("C")))


def test_gzip_content_without_gz_suffix_is_read(tmp_path):
    write_structure(tmp_path, "C")
    (tmp_path / f"C_{md5('C')}.data.json").write_bytes(gzip.compress(b'{"_key":"a"}\n'))
    assert ops_of(open_dump(tmp_path).collection("C")) == [("upsert", "a", {"_key": "a"})]


def test_batches_reject_nonpositive_size(tmp_path):
    write_structure(tmp_path, "C")
    with pytest.raises(ValueError):
        next(iter_operation_batches(open_dump(tmp_path).collection("C"), batch_size=0))


def test_read_graphs_without_graphs_collection(tmp_path):
    write_structure(tmp_path, "C")
    assert read_graphs(open_dump(tmp_path)) == []


# --------------------------------------------------------------------------- writing


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
