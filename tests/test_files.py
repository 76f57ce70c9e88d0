"""graphsvc.files: a file is whole under its final name or not there at all."""

import json

import pytest

from graphsvc.files import atomic_file, atomic_path, write_json, write_text


def test_a_failed_write_leaves_the_old_file_and_no_leftovers(tmp_path):
    target = write_text(tmp_path / "manifest.json", "old")
    with pytest.raises(RuntimeError):
        with atomic_file(target, "w") as handle:
            handle.write("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


@pytest.mark.parametrize("durable", [False, True])
def test_a_clean_write_replaces_the_file(tmp_path, durable):
    target = tmp_path / "state.json"
    write_json(target, {"a": 1})
    write_json(target, {"a": 2}, durable=durable)
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_atomic_path_hands_a_name_beside_the_target(tmp_path):
    target = tmp_path / "model.pt"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".model.pt.")
        assert not target.exists()
        tmp.write_bytes(b"weights")
    assert target.read_bytes() == b"weights"
    with pytest.raises(OSError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise OSError("disk full")
    assert target.read_bytes() == b"weights" and len(list(tmp_path.iterdir())) == 1
