import json
import os

import numpy as np
import pyarrow as pa
import pytest

from graphsvc.errors import IndexCorrupt, IndexNotFound
from graphsvc.index.artifacts import (
    LoadedIndex,
    Manifest,
    current_version,
    list_versions,
    load_current,
    publish,
)
from graphsvc.index.faiss_index import VectorIndex

MODEL = {"name": "all-MiniLM-L6-v2", "version": "1"}


def make(n=200, d=8, seed=0):
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, d)).astype(np.float32)
    keys = [f"p{seed}-{i}" for i in range(n)]
    return VectorIndex.build(vectors, metric="cosine"), keys, vectors


def test_publish_layout_and_load(tmp_path):
    idx, keys, vectors = make()
    m = publish(tmp_path, "products", idx, keys, MODEL, extra={"source": "unit-test"})
    coll = tmp_path / "products"
    vdir = coll / "v000001"
    assert m.version == 1
    assert (coll / "CURRENT").read_text().strip() == "v000001"
    assert sorted(p.name for p in vdir.iterdir()) == ["index.faiss", "keys.arrow", "manifest.json"]
    assert not [p for p in coll.iterdir() if p.name.startswith(".tmp-")]

    data = json.loads((vdir / "manifest.json").read_text())
    assert data["collection"] == "products" and data["version"] == 1
    assert data["model"] == MODEL
    assert (data["dim"], data["metric"], data["kind"], data["count"]) == (8, "cosine", "flat", 200)
    assert set(data["checksums"]) == {"index.faiss", "keys.arrow"}
    assert data["source"] == "unit-test"
    assert data["created_at"].endswith("+00:00")
    assert Manifest.from_json(m.to_json()) == m

    table = pa.ipc.open_file(pa.OSFile(str(vdir / "keys.arrow"))).read_all()
    assert table.column_names == ["_key"]
    assert table.column("_key").to_pylist() == keys

    loaded = load_current(tmp_path, "products")
    assert isinstance(loaded, LoadedIndex)
    assert loaded.directory == vdir and loaded.manifest == m
    assert loaded.manifest.extra == {"source": "unit-test"}
    assert loaded.position("p0-17") == 17 and loaded.position("nope") is None
    _, ids = loaded.index.search(vectors[17], 3)
    assert loaded.key_at(ids[0])[0] == "p0-17"
    assert loaded.key_at([3, -1, 0]) == ["p0-3", None, "p0-0"]
    np.testing.assert_array_equal(loaded.index.search(vectors[:5], 4)[1], idx.search(vectors[:5], 4)[1])


def test_publish_links_an_index_file_already_saved(tmp_path):
    idx, keys, vectors = make(seed=3)
    saved = tmp_path / "journal" / "index.faiss"
    saved.parent.mkdir()
    idx.save(saved)
    m = publish(tmp_path / "indexes", "products", idx, keys, MODEL, index_file=saved)
    saved.unlink()  # the journal goes; the published version stays whole
    loaded = load_current(tmp_path / "indexes", "products", verify=True)
    assert loaded.manifest.version == m.version and loaded.manifest.count == 200
    np.testing.assert_array_equal(loaded.index.search(vectors[:5], 4)[1], idx.search(vectors[:5], 4)[1])


def test_publish_twice_and_prune(tmp_path):
    for seed in range(2):
        idx, keys, _ = make(seed=seed)
        publish(tmp_path, "products", idx, keys, MODEL)
    assert list_versions(tmp_path, "products") == [1, 2]
    assert current_version(tmp_path, "products") == 2
    assert (tmp_path / "products" / "CURRENT").read_text().strip() == "v000002"
    assert load_current(tmp_path, "products").position("p1-0") == 0

    idx, keys, _ = make(seed=2)
    m = publish(tmp_path, "products", idx, keys, MODEL, keep=2)
    assert m.version == 3
    assert list_versions(tmp_path, "products") == [2, 3]
    assert not (tmp_path / "products" / "v000001").exists()
    assert current_version(tmp_path, "products") == 3
    assert not [p for p in (tmp_path / "products").iterdir() if p.name.startswith(".tmp-")]


def test_corrupt_index_byte(tmp_path):
    idx, keys, _ = make()
    publish(tmp_path, "products", idx, keys, MODEL)
    path = tmp_path / "products" / "v000001" / "index.faiss"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(IndexCorrupt, match="index.faiss"):
        load_current(tmp_path, "products")
    # verify=False skips checksums (a flipped float byte still parses)
    load_current(tmp_path, "products", verify=False)


def test_missing_file_and_count_mismatch(tmp_path):
    idx, keys, _ = make()
    publish(tmp_path, "products", idx, keys, MODEL)
    vdir = tmp_path / "products" / "v000001"
    (vdir / "keys.arrow").unlink()
    with pytest.raises(IndexCorrupt, match="keys.arrow"):
        load_current(tmp_path, "products")

    publish(tmp_path, "products", idx, keys, MODEL)
    manifest_path = tmp_path / "products" / "v000002" / "manifest.json"
    data = json.loads(manifest_path.read_text())
    data["count"] = 199
    manifest_path.write_text(json.dumps(data))
    with pytest.raises(IndexCorrupt, match="199"):
        load_current(tmp_path, "products")


def test_not_found(tmp_path):
    with pytest.raises(IndexNotFound, match="products"):
        load_current(tmp_path, "products")
    (tmp_path / "products").mkdir()
    with pytest.raises(IndexNotFound, match="products"):
        load_current(tmp_path, "products")
    assert current_version(tmp_path, "products") is None
    assert list_versions(tmp_path, "products") == []


def test_leftover_tmp_dir_is_ignored_then_removed(tmp_path):
    idx, keys, _ = make()
    publish(tmp_path, "products", idx, keys, MODEL)
    crashed = tmp_path / "products" / ".tmp-deadbeef"
    crashed.mkdir()
    (crashed / "index.faiss").write_bytes(b"garbage")
    assert list_versions(tmp_path, "products") == [1]
    assert load_current(tmp_path, "products").version == 1
    publish(tmp_path, "products", idx, keys, MODEL)
    assert not crashed.exists()
    assert list_versions(tmp_path, "products") == [1, 2]


def test_keys_validation(tmp_path):
    idx, keys, _ = make()
    with pytest.raises(ValueError, match="keys"):
        publish(tmp_path, "products", idx, keys[:-1], MODEL)
    with pytest.raises(ValueError, match="unique"):
        publish(tmp_path, "products", idx, keys[:-1] + [keys[0]], MODEL)
    with pytest.raises(ValueError):
        publish(tmp_path, "products", idx, keys, MODEL, keep=0)
    assert list_versions(tmp_path, "products") == []
    assert current_version(tmp_path, "products") is None
    # an Arrow array works as well as a list
    m = publish(tmp_path, "products", idx, pa.array(keys), MODEL)
    assert m.count == 200


def test_ivf_artifact_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((3000, 16)).astype(np.float32)
    idx = VectorIndex.build(vectors, metric="l2", kind="ivf", nlist=32, nprobe=8)
    keys = [str(i) for i in range(3000)]
    m = publish(tmp_path, "users", idx, keys, MODEL)
    assert m.kind == "ivf" and m.params == {"nlist": 32, "nprobe": 8} and m.metric == "l2"
    loaded = load_current(tmp_path, "users")
    assert loaded.index.metric == "l2" and loaded.index.params == {"nlist": 32, "nprobe": 8}
    s1, i1 = idx.search(vectors[:10], 5)
    s2, i2 = loaded.index.search(vectors[:10], 5)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(s1, s2)
    assert os.listdir(tmp_path) == ["users"]


@pytest.mark.parametrize("name", ["products\n", "../products", "", ".", "a/b"])
def test_a_collection_name_that_is_not_a_plain_name_is_refused(tmp_path, name):
    from graphsvc.index.artifacts import list_versions

    with pytest.raises(ValueError, match="invalid collection name"):
        list_versions(tmp_path, name)
