"""graphsvc.store.dumps.operations: a collection's data read one operation at a time through
the block reader: the line formats, blank lines, and errors that name the file and line."""

from __future__ import annotations

import gzip
import json

import pytest

from graphsvc.errors import DumpFormatError
from graphsvc.store.dumps import iter_operations, open_dump, read_graphs
from tests.store.dumps.dump_files import fixture_dir, md5, ops_of, write_lines, write_structure


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



def test_read_graphs_without_graphs_collection(tmp_path):
    write_structure(tmp_path, "C")
    assert read_graphs(open_dump(tmp_path)) == []
