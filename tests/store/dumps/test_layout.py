"""graphsvc.store.dumps.layout: what a dump directory holds, from real arangodump fixtures
and hand-made layouts (old and new structure files, split and hashed data files, encryption)."""

from __future__ import annotations

import pytest

from graphsvc.errors import DumpFormatError
from graphsvc.store.base import EdgeDefinition, GraphInfo
from graphsvc.store.dumps import iter_operations, open_dump, read_graphs
from tests.store.dumps.dump_files import fixture_dir, md5, ops_of, write_lines, write_structure


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
