import gzip
import hashlib
import json
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from graphsvc.errors import ConfigError, DumpFormatError, StoreError
from graphsvc.store import open_store
from graphsvc.store.dumps import iter_line_blocks, parse_block, progress_key, write_dump
from graphsvc.store.embedded import EmbeddedStore
from jobs.cli import cli
from jobs.restore_dumps import restore_dumps

# ------------------------------------------------------------------------------ helpers


def _md5(name: str) -> str:
    return hashlib.md5(name.encode()).hexdigest()


def _structure(name: str, kind: str = "document", indexes=()) -> dict:
    return {"indexes": list(indexes), "parameters": {"name": name, "type": 3 if kind == "edge" else 2}}


def _lines(values) -> bytes:
    return b"".join((v if isinstance(v, bytes) else json.dumps(v).encode()) + b"\n" for v in values)


def _hand_dump(directory: Path, files: dict[str, bytes | str | dict], encryption: str = "none") -> Path:
    """A dump folder written file by file: dicts become JSON, `.gz` names are compressed."""
    directory.mkdir(parents=True)
    (directory / "ENCRYPTION").write_text(encryption)
    for name, content in files.items():
        if isinstance(content, dict):
            content = json.dumps(content)
        if isinstance(content, str):
            content = content.encode()
        (directory / name).write_bytes(gzip.compress(content) if name.endswith(".gz") else content)
    return directory


def _documents(store, name: str) -> dict[str, dict]:
    keys = store.select_keys(name)
    return {d["_key"]: {k: v for k, v in d.items() if k not in ("_rev", "_id")}
            for d in store.get_documents(name, keys)}


def _revs(store, name: str) -> dict[str, str]:
    keys = store.select_keys(name)
    return {d["_key"]: d["_rev"] for d in store.get_documents(name, keys)}


def _run(args, store_path: Path):
    return CliRunner().invoke(cli, ["--store", str(store_path), "restore-dumps", *map(str, args)])


def _products(count: int, start: int = 0) -> list[dict]:
    return [{"_key": f"p{i}", "title": f"Product {i}", "price": i + 0.5, "tags": ["a", f"t{i % 3}"]}
            for i in range(start, start + count)]


def _data_file(dump: Path, collection: str) -> Path:
    return next(dump.glob(f"{collection}_*.data.json*"))


def _rewrite_lines(path: Path, change) -> None:
    raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    lines = raw.splitlines()
    change(lines)
    data = b"\n".join(lines) + b"\n"
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)


# ------------------------------------------------------------------------------ the real fixtures


def test_seed_workshop_dump_restores_exactly_with_dangling_ratings(shared_fixtures, tmp_path):
    store_path = tmp_path / "store.duckdb"
    result = _run([shared_fixtures / "seed_workshop_dump", "--json"], store_path)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    rows = {c["collection"]: c for c in summary["collections"]}
    assert rows["Users"]["written"] == rows["Users"]["read"] == 943 and rows["Users"]["kind"] == "document"
    assert rows["Ratings"]["written"] == 65_499 and rows["Ratings"]["kind"] == "edge"
    assert rows["Ratings"]["skipped"] == rows["Ratings"]["removed"] == 0
    # imdb_vertices has no data file, so every rating points at a missing movie
    dangling = rows["Ratings"]["dangling_edges"]
    assert dangling["count"] == 65_499 and len(dangling["examples"]) == 3
    assert all(e["_to"].startswith("imdb_vertices/") for e in dangling["examples"])
    assert summary["totals"]["dangling_edges"] == 65_499 and summary["totals"]["written"] == 66_442
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
        user = store.get_documents("Users", ["73470"])[0]
        assert {k: user[k] for k in ("age", "gender", "type", "zip_code")} == {
            "age": 22, "gender": "M", "type": "User", "zip_code": "77841"}
        edge = store.get_documents("Ratings", ["2057191"])[0]
        assert (edge["_from"], edge["_to"], edge["rating"], edge["$label"]) == (
            "Users/72963", "imdb_vertices/71816", 4, "RATED")


def test_seed_workshop_dump_human_summary_is_one_line_per_collection_and_a_total(shared_fixtures, tmp_path):
    result = _run([shared_fixtures / "seed_workshop_dump"], tmp_path / "s.duckdb")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 5
    ratings = next(line for line in lines if line.startswith("Ratings"))
    assert "65499 dangling edges" in ratings
    assert lines[-1].startswith("restored 66442 documents into 4 collections")


def test_imdb_example_dump_gives_the_named_graph(shared_fixtures, tmp_path):
    with open_store(str(tmp_path / "s.duckdb"), create=True) as store:
        summary = restore_dumps(store, [shared_fixtures / "imdb_example_dump"])
        assert summary.graphs == ["imdb"]
        (graph,) = store.graphs()
        assert graph.edge_definitions[0].collection == "imdb_edges"
        assert graph.edge_definitions[0].from_collections == ("imdb_vertices",)
        assert not store.has_collection("_graphs")


# ------------------------------------------------------------------------------ layouts


@pytest.mark.parametrize("envelope", [False, True], ids=["plain", "envelope"])
@pytest.mark.parametrize("compress", [False, True], ids=["json", "gz"])
@pytest.mark.parametrize("count", [20, 3000], ids=["line-by-line", "arrow-blocks"])
def test_every_data_layout_restores_the_same_documents(tmp_path, envelope, compress, count):
    products = _products(count)
    products[7]["dimensions"] = {"w": 3, "h": 4.5}
    products[8]["released"] = "2020-01-01T10:00:00Z"  # an ISO date stays a string
    edges = [{"_key": f"e{i}", "_from": f"products/p{i}", "_to": f"products/p{(i + 1) % count}", "w": i}
             for i in range(count)]
    dump = write_dump(tmp_path / "d", "db", [("products", "document", products), ("links", "edge", edges)],
                      envelope=envelope, compress=compress)
    with open_store(str(tmp_path / "s.duckdb"), create=True) as store:
        summary = restore_dumps(store, [dump], batch_size=1000)
        rows = {r.collection: r for r in summary.collections}
        assert (rows["products"].read, rows["products"].written) == (count, count)
        assert rows["links"].written == count and rows["links"].dangling_edges["count"] == 0
        restored = _documents(store, "products")
        assert restored == {p["_key"]: p for p in products}
        assert _documents(store, "links")["e5"] == edges[5]


def test_split_files_restore_in_part_order_and_later_parts_win(tmp_path):
    stem = f"things_{_md5('things')}"
    dump = _hand_dump(tmp_path / "d", {
        f"{stem}.structure.json": _structure("things"),
        f"{stem}.0.data.json": _lines([{"_key": "a", "v": 0}, {"_key": "b", "v": 0}]),
        f"{stem}.1.data.json.gz": _lines([{"_key": "b", "v": 1}, {"_key": "c", "v": 1}]),
        f"{stem}.2.data.json": _lines([{"_key": "c", "v": 2}]),
    })
    with open_store(str(tmp_path / "s.duckdb"), create=True) as store:
        summary = restore_dumps(store, [dump])
        assert summary.collections[0].read == 5
        assert {k: d["v"] for k, d in _documents(store, "things").items()} == {"a": 0, "b": 1, "c": 2}


def test_unhashed_names_and_old_parameters_layouts(tmp_path):
    dump = _hand_dump(tmp_path / "d", {
        # version 4/5 dumps: name and type at the top level, type as a string, no dump.json
        "old.structure.json": {"name": "old", "type": "2", "version": 5, "indexes": []},
        "old.data.json": _lines([{"_key": "x", "n": 1}]),
        "older.structure.json": {"parameters": {"name": "older", "type": 3, "version": 4}},
        "older.data.json": _lines([{"_key": "e", "_from": "old/x", "_to": "old/y"}]),
    })
    with open_store(str(tmp_path / "s.duckdb"), create=True) as store:
        summary = restore_dumps(store, [dump])
        assert {r.collection: (r.kind, r.written) for r in summary.collections} == {
            "old": ("document", 1), "older": ("edge", 1)}
        older = next(r for r in summary.collections if r.collection == "older")
        assert older.dangling_edges["count"] == 1 and older.dangling_edges["examples"][0]["_to"] == "old/y"


def test_envelope_2301_and_2302_markers_apply_in_file_order(tmp_path):
    stem = f"things_{_md5('things')}"
    markers = [
        {"type": 2300, "data": {"_key": "a", "_id": "things/a", "_rev": "r1", "v": 1}},
        {"type": 2301, "key": "b", "rev": "r2", "data": {"v": 2}},  # key only at the top level
        {"type": 2302, "key": "a"},
        {"type": 2300, "data": {"_key": "a", "v": 3}},  # re-inserted after its removal
        {"type": 2302, "data": {"_key": "b"}},  # the key inside data
        {"type": 2302, "key": "never-existed"},
        {"type": 2300, "data": {"_key": "c", "v": 4}},
    ]
    dump = _hand_dump(tmp_path / "d", {f"{stem}.structure.json": _structure("things"),
                                       f"{stem}.data.json": _lines(markers * 1)})
    with open_store(str(tmp_path / "s.duckdb"), create=True) as store:
        (row,) = restore_dumps(store, [dump]).collections
        assert _documents(store, "things") == {"a": {"_key": "a", "v": 3}, "c": {"_key": "c", "v": 4}}
        assert (row.read, row.written, row.removed) == (7, 4, 2)


def test_many_removals_in_big_blocks_keep_file_order(tmp_path):
    stem = f"things_{_md5('things')}"
    markers = []
    for i in range(3000):
        markers.append({"type": 2300, "data": {"_key": f"k{i % 700}", "v": i}})
        if i % 5 == 4:
            markers.append({"type": 2302, "key": f"k{(i - 2) % 700}"})
    expected: dict[str, int] = {}
    for m in markers:
        if m["type"] == 2302:
            expected.pop(m["key"], None)
        else:
            expected[m["data"]["_key"]] = m["data"]["v"]
    dump = _hand_dump(tmp_path / "d", {f"{stem}.structure.json": _structure("things"),
                                       f"{stem}.data.json.gz": _lines(markers)})
    with open_store(str(tmp_path / "s.duckdb"), create=True) as store:
        restore_dumps(store, [dump], batch_size=1000)
        assert {k: d["v"] for k, d in _documents(store, "things").items()} == expected


def test_values_whose_type_changes_within_a_block_keep_their_types(tmp_path):
    documents = _products(2000)
    documents[700]["price"] = "on request"  # number → string inside one Arrow block
    documents[900]["dimensions"] = {"w": 1}
    documents[901]["dimensions"] = {"w": 2, "h": None}  # an explicit nested null
    documents[1500]["big"] = 2**62 + 1  # exact as int64, not as a double
    dump = write_dump(tmp_path / "d", "db", [("products", "document", documents)])
    with open_store(str(tmp_path / "s.duckdb"), create=True) as store:
        restore_dumps(store, [dump], batch_size=2000)
        restored = _documents(store, "products")
        assert restored["p700"]["price"] == "on request" and restored["p701"]["price"] == 701.5
        assert restored["p900"]["dimensions"] == {"w": 1}  # not {"w": 1, "h": None}
        assert restored["p1500"]["big"] == 2**62 + 1
        assert len(restored) == 2000


def test_blank_lines_and_a_last_line_without_newline(tmp_path):
    stem = f"things_{_md5('things')}"
    dump = _hand_dump(tmp_path / "d", {f"{stem}.structure.json": _structure("things"),
                                       f"{stem}.data.json": b'{"_key":"a"}\n\n\r\n{"_key":"b"}\n{"_key":"c"}'})
    with open_store(str(tmp_path / "s.duckdb"), create=True) as store:
        (row,) = restore_dumps(store, [dump]).collections
        assert row.read == 3 and store.select_keys("things") == ["a", "b", "c"]


def test_an_encrypted_dump_is_refused_with_one_line(tmp_path):
    dump = _hand_dump(tmp_path / "d", {"things.structure.json": _structure("things"),
                                       "things.data.json": b"\x8f\x01 not json"}, encryption="aes-256-ctr")
    result = _run([dump], tmp_path / "s.duckdb")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and "encrypted (aes-256-ctr)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_indexes_from_structure_files_are_listed_with_their_outcome(tmp_path):
    indexes = [{"id": "0", "type": "primary", "fields": ["_key"]},
               {"id": "7", "type": "persistent", "fields": ["title"], "unique": False, "sparse": False}]
    dump = _hand_dump(tmp_path / "d", {"things.structure.json": _structure("things", indexes=indexes),
                                       "things.data.json": _lines([{"_key": "a", "title": "A"}])})
    result = _run([dump, "--json"], tmp_path / "s.duckdb")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)["collections"]
    outcomes = {i["type"]: i for i in row["indexes"]}
    assert outcomes["primary"]["status"] == "exists"
    assert outcomes["persistent"]["status"] == "skipped" and outcomes["persistent"]["fields"] == ["title"]
    assert "embedded store" in outcomes["persistent"]["reason"]


# ------------------------------------------------------------------------------ errors, resume, skip


def _corrupt_dump(tmp_path):
    dump = write_dump(tmp_path / "bad", "db", [("things", "document", [{"_key": str(i)} for i in range(5)])])
    data = _data_file(dump, "things")
    _rewrite_lines(data, lambda lines: lines.__setitem__(3, b'{"_key": "3", broken'))
    return dump, data


def test_a_bad_line_stops_the_restore_and_keeps_what_was_committed(tmp_path):
    good = write_dump(tmp_path / "good", "db", [("others", "document", [{"_key": "x"}])])
    bad, data_file = _corrupt_dump(tmp_path)
    with open_store(str(tmp_path / "s.duckdb"), create=True) as store:
        store.create_collection("things")
        store.upsert_documents("things", [{"_key": "kept", "v": 1}])
        with pytest.raises(DumpFormatError, match=rf"{data_file.name} line 4: invalid JSON"):
            restore_dumps(store, [good, bad])
        assert store.select_keys("others") == ["x"]
        assert store.select_keys("things") == ["0", "1", "2", "kept"]  # lines 1–3 are committed
        state = store.get_state(progress_key(bad, "things"))
        assert (state["file"], state["line"], state["status"]) == (data_file.name, 3, "running")


def test_cli_errors_are_one_line_with_nonzero_exit(tmp_path):
    bad, data_file = _corrupt_dump(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    for directory, expected in [
        (bad, f"{data_file.name} line 4"),
        (empty, "holds no arangodump files"),
        (tmp_path / "absent", "absent"),
    ]:
        result = _run([directory], tmp_path / "s.duckdb")
        assert result.exit_code == 1, result.output
        assert expected in result.stderr
        assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1


def _split_products_dump(directory: Path, bad_line: int | None = None) -> Path:
    """120 products in two split files of 60 lines; optionally a broken line in the second."""
    stem = f"products_{_md5('products')}"
    first, second = _products(60), _products(60, start=60)
    second_lines = [json.dumps(p).encode() for p in second]
    if bad_line is not None:
        second_lines[bad_line - 1] = b'{"_key": "p-broken", '
    return _hand_dump(directory, {
        f"{stem}.structure.json": _structure("products"),
        f"{stem}.0.data.json.gz": _lines(first),
        f"{stem}.1.data.json.gz": _lines(second_lines),
    })


def test_resume_after_a_bad_line_continues_without_duplicates_or_rewrites(tmp_path):
    dump = _split_products_dump(tmp_path / "d", bad_line=27)
    bad_file = next(dump.glob("*.1.data.json.gz"))
    store_path = tmp_path / "s.duckdb"
    result = _run([dump, "--batch-size", "10"], store_path)
    assert result.exit_code == 1
    assert f"{bad_file.name} line 27: invalid JSON" in result.stderr and "--resume" in result.stderr
    with open_store(str(store_path)) as store:
        assert store.collection("products").count == 60 + 26
        revs_before = _revs(store, "products")
        marker_before = store.change_marker("products")

    # fix the line, then resume
    _rewrite_lines(bad_file, lambda lines: lines.__setitem__(26, json.dumps(_products(1, start=86)[0]).encode()))
    result = _run([dump, "--batch-size", "10", "--resume", "--json"], store_path)
    assert result.exit_code == 0, result.output
    resumed = json.loads(result.stdout)
    (row,) = resumed["collections"]
    assert row["resumed_from"] == {"file": bad_file.name, "line": 26}
    assert (row["read"], row["written"], row["skipped"]) == (120, 120, 0)  # both runs together
    assert resumed["totals"]["read_this_run"] == 120 - 86

    clean_path = tmp_path / "clean.duckdb"
    assert _run([dump, "--batch-size", "10"], clean_path).exit_code == 0
    with open_store(str(store_path)) as store, open_store(str(clean_path)) as clean:
        assert store.collection("products").count == 120
        assert _documents(store, "products") == _documents(clean, "products")
        revs_after = _revs(store, "products")
        # what was committed before the failure was not written again
        assert all(revs_after[key] == rev for key, rev in revs_before.items())
        assert store.change_marker("products") > marker_before
        assert store.get_state(progress_key(dump, "products"))["status"] == "done"


def test_resume_skips_finished_collections_and_a_fresh_run_starts_over(tmp_path):
    dump = write_dump(tmp_path / "d", "db", [("a", "document", _products(30)), ("b", "document", _products(30))])
    b_file = _data_file(dump, "b")
    _rewrite_lines(b_file, lambda lines: lines.__setitem__(19, b"[1, 2]"))
    store_path = tmp_path / "s.duckdb"
    result = _run([dump, "--batch-size", "7"], store_path)
    assert result.exit_code == 1 and "line 20: expected a JSON object" in result.stderr
    with open_store(str(store_path)) as store:
        marker_a = store.change_marker("a")
    _rewrite_lines(b_file, lambda lines: lines.__setitem__(19, json.dumps(_products(1, start=19)[0]).encode()))
    result = _run([dump, "--resume", "--json"], store_path)
    assert result.exit_code == 0, result.output
    rows = {r["collection"]: r for r in json.loads(result.stdout)["collections"]}
    assert rows["a"]["status"] == "already restored" and rows["a"]["written"] == 30
    # blocks of 7: lines 1–14, then 15–19 of the block that held the bad line 20
    assert rows["b"]["resumed_from"]["line"] == 19 and rows["b"]["written"] == 30
    with open_store(str(store_path)) as store:
        assert store.change_marker("a") == marker_a  # not read or written again
        assert store.collection("b").count == 30
        marker_b = store.change_marker("b")
    # without --resume the progress is forgotten and everything is written again
    result = _run([dump, "--json"], store_path)
    rows = {r["collection"]: r for r in json.loads(result.stdout)["collections"]}
    assert rows["a"]["status"] == rows["b"]["status"] == "restored" and rows["b"]["resumed_from"] is None
    with open_store(str(store_path)) as store:
        assert store.change_marker("b") > marker_b and store.collection("b").count == 30


class _FailingStore(EmbeddedStore):
    """The embedded store, failing its n-th table write (a crash in the middle of a restore)."""

    def __init__(self, path, fail_at: int):
        super().__init__(path, create=True)
        self.writes, self.fail_at = 0, fail_at

    def upsert_table(self, name, table, state=None, *, checked=False):
        self.writes += 1
        if self.writes == self.fail_at:
            raise StoreError("disk full (simulated)")
        return super().upsert_table(name, table, state, checked=checked)


def test_a_store_failure_mid_restore_resumes_from_the_last_committed_block(tmp_path):
    dump = write_dump(tmp_path / "d", "db", [("products", "document", _products(100))])
    store_path = tmp_path / "s.duckdb"
    failing = _FailingStore(store_path, fail_at=4)
    with pytest.raises(StoreError, match="disk full"):
        restore_dumps(failing, [dump], batch_size=10)
    assert failing.collection("products").count == 30
    assert failing.get_state(progress_key(dump, "products"))["line"] == 30
    failing.close()
    with open_store(str(store_path)) as store:
        summary = restore_dumps(store, [dump], batch_size=10, resume=True)
        assert summary.collections[0].resumed_from["line"] == 30
        assert (summary.collections[0].read, summary.collections[0].written) == (100, 100)
        assert store.collection("products").count == 100


def test_on_error_skip_writes_rejects_and_counts_them(tmp_path):
    stem = f"links_{_md5('links')}"
    good = [{"_key": f"e{i}", "_from": "a/1", "_to": f"b/{i}"} for i in range(6)]
    lines = [json.dumps(e).encode() for e in good]
    lines.insert(2, b'{"_key": "e-broken"')  # line 3
    lines.insert(4, json.dumps({"_key": "no-ends", "_from": "a/1"}).encode())  # line 5
    lines.insert(6, json.dumps({"_key": "bad key/with slash", "_from": "a/1", "_to": "b/1"}).encode())  # line 7
    dump = _hand_dump(tmp_path / "d", {f"{stem}.structure.json": _structure("links", "edge"),
                                       f"{stem}.data.json": b"\n".join(lines) + b"\n"})
    store_path = tmp_path / "s.duckdb"
    result = _run([dump, "--on-error", "skip", "--json"], store_path)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    (row,) = summary["collections"]
    assert (row["read"], row["written"], row["skipped"]) == (9, 6, 3)
    rejects_path = tmp_path / "restore-rejects.jsonl"  # beside the store by default
    assert summary["rejects_file"] == str(rejects_path)
    rejects = [json.loads(line) for line in rejects_path.read_text().splitlines()]
    assert [r["line"] for r in rejects] == [3, 5, 7]
    assert all(r["file"].endswith(f"{stem}.data.json") for r in rejects)
    assert rejects[0]["raw"] == '{"_key": "e-broken"' and rejects[0]["error"].startswith("invalid JSON")
    assert "_to as 'Collection/key'" in rejects[1]["error"]
    assert "invalid _key" in rejects[2]["error"]
    with open_store(str(store_path)) as store:
        assert store.select_keys("links") == [f"e{i}" for i in range(6)]

    # a chosen rejects file; a fresh run replaces its content
    chosen = tmp_path / "out" / "rejected.jsonl"
    for _ in range(2):
        result = _run([dump, "--on-error", "skip", "--rejects-file", chosen], store_path)
        assert result.exit_code == 0 and "3 skipped (see" in result.stdout
        assert len(chosen.read_text().splitlines()) == 3


def test_a_corrupt_gzip_names_the_file_and_line_and_keeps_earlier_lines(tmp_path):
    dump = write_dump(tmp_path / "d", "db", [("products", "document", _products(5000))])
    data = _data_file(dump, "products")
    data.write_bytes(data.read_bytes()[: len(data.read_bytes()) // 2])  # truncated
    with open_store(str(tmp_path / "s.duckdb"), create=True) as store:
        with pytest.raises(DumpFormatError, match=rf"{data.name} line (\d+): corrupt gzip stream") as failure:
            restore_dumps(store, [dump], batch_size=500)
        assert 0 < store.collection("products").count == failure.value.line - 1


def test_an_edge_without_collection_key_ends_stops_at_its_line(tmp_path):
    dump = _hand_dump(tmp_path / "d", {
        "links.structure.json": _structure("links", "edge"),
        "links.data.json": _lines([{"_key": "a", "_from": "x/1", "_to": "y/1"},
                                   {"_key": "b", "_from": "x1", "_to": "y/1"}]),
    })
    with open_store(str(tmp_path / "s.duckdb"), create=True) as store:
        with pytest.raises(DumpFormatError, match=r"links.data.json line 2: edge 'b' needs _from"):
            restore_dumps(store, [dump])


# ------------------------------------------------------------------------------ options


def _two_collections(tmp_path) -> Path:
    return write_dump(tmp_path / "d", "db", [
        ("movies", "document", [{"_key": "m1", "title": "A"}, {"_key": "m2", "title": "B"}]),
        ("people", "document", [{"_key": "p1"}]),
        ("_aqlfunctions", "document", [{"_key": "f1", "code": "x"}]),
    ])


def test_restoring_twice_upserts_without_duplicates(tmp_path):
    dump = write_dump(tmp_path / "d", "db", [("things", "document", [{"_key": "a", "v": 1}, {"_key": "b", "v": 2}])])
    with open_store(str(tmp_path / "s.duckdb"), create=True) as store:
        restore_dumps(store, [dump])
        restore_dumps(store, [dump])
        assert store.collection("things").count == 2


def test_collection_and_exclude_choose_what_is_restored(tmp_path):
    dump = _two_collections(tmp_path)
    only = tmp_path / "only.duckdb"
    assert _run([dump, "--collection", "movies"], only).exit_code == 0
    with open_store(str(only)) as store:
        assert [c.name for c in store.collections()] == ["movies"]
    without = tmp_path / "without.duckdb"
    assert _run([dump, "--exclude", "movies"], without).exit_code == 0
    with open_store(str(without)) as store:
        assert [c.name for c in store.collections()] == ["people"]
    result = _run([dump, "--collection", "films"], tmp_path / "x.duckdb")
    assert result.exit_code == 1 and "--collection films: not in the dump" in result.stderr


def test_system_collections_are_skipped_unless_included(tmp_path):
    dump = _two_collections(tmp_path)
    with open_store(str(tmp_path / "a.duckdb"), create=True) as store:
        summary = restore_dumps(store, [dump])
        assert summary.skipped_system == ["_aqlfunctions"] and not store.has_collection("_aqlfunctions")
    with open_store(str(tmp_path / "b.duckdb"), create=True) as store:
        summary = restore_dumps(store, [dump], include_system_collections=True)
        assert summary.skipped_system == [] and store.select_keys("_aqlfunctions") == ["f1"]


def test_overwrite_drops_documents_missing_from_the_dump_while_upsert_keeps_them(tmp_path):
    dump = _two_collections(tmp_path)
    store_path = tmp_path / "s.duckdb"
    with open_store(str(store_path), create=True) as store:
        store.create_collection("movies")
        store.upsert_documents("movies", [{"_key": "local", "title": "mine"}, {"_key": "m1", "title": "old"}])
    assert _run([dump, "--collection", "movies"], store_path).exit_code == 0
    with open_store(str(store_path)) as store:
        assert store.select_keys("movies") == ["local", "m1", "m2"]
        assert store.get_documents("movies", ["m1"])[0]["title"] == "A"
    assert _run([dump, "--collection", "movies", "--overwrite"], store_path).exit_code == 0
    with open_store(str(store_path)) as store:
        assert store.select_keys("movies") == ["m1", "m2"]


def test_dry_run_counts_and_writes_nothing(tmp_path):
    dump = _two_collections(tmp_path)
    _rewrite_lines(_data_file(dump, "movies"), lambda lines: lines.append(b"not json"))
    store_path = tmp_path / "never.duckdb"
    result = _run([dump, "--dry-run", "--json"], store_path)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    rows = {r["collection"]: r for r in summary["collections"]}
    assert summary["dry_run"] is True
    assert (rows["movies"]["read"], rows["movies"]["written"], rows["movies"]["skipped"]) == (3, 2, 1)
    assert rows["people"]["written"] == 1 and summary["skipped_system_collections"] == ["_aqlfunctions"]
    assert "movies: 1 invalid line(s)" in result.stderr
    assert not store_path.exists()
    human = _run([dump, "--dry-run"], store_path)
    assert human.stdout.strip().splitlines()[-1].startswith("would restore 3 documents into 2 collections")
    assert not store_path.exists()


class _ConcurrentStore:
    """The embedded store behind a lock, claiming to take concurrent writers like ArangoDB."""

    concurrent_writers = True

    def __init__(self, path):
        self._store = EmbeddedStore(path, create=True)
        self._lock = threading.RLock()
        self.url = self._store.url
        self.threads_seen: set[str] = set()

    def __getattr__(self, name):
        method = getattr(self._store, name)
        if not callable(method):  # what the store declares (collection_properties, …)
            return method

        def locked(*args, **kwargs):
            with self._lock:
                self.threads_seen.add(threading.current_thread().name)
                return method(*args, **kwargs)

        return locked


def test_threads_restore_collections_in_parallel_on_stores_that_allow_it(tmp_path):
    dump = write_dump(tmp_path / "d", "db", [(f"c{i}", "document", _products(50)) for i in range(4)])
    store = _ConcurrentStore(tmp_path / "s.duckdb")
    try:
        summary = restore_dumps(store, [dump], batch_size=10, threads=3)
        assert [r.collection for r in summary.collections] == ["c0", "c1", "c2", "c3"]
        assert all(r.written == 50 for r in summary.collections)
        assert all(store.collection(f"c{i}").count == 50 for i in range(4))
        assert any(name.startswith("restore_") for name in store.threads_seen)
    finally:
        store.close()


def test_unknown_on_error_mode_is_a_config_error(tmp_path):
    with open_store(str(tmp_path / "s.duckdb"), create=True) as store:
        with pytest.raises(ConfigError):
            restore_dumps(store, [_two_collections(tmp_path)], on_error="ignore")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ the block reader


def test_line_blocks_respect_line_and_byte_limits_and_resume_offsets(tmp_path):
    path = tmp_path / "x.data.json.gz"
    path.write_bytes(gzip.compress(_lines([{"_key": f"k{i}", "pad": "x" * (i % 50)} for i in range(1000)])))
    blocks = list(iter_line_blocks(path, max_lines=300))
    assert [(b.first_line, b.num_lines) for b in blocks] == [(1, 300), (301, 300), (601, 300), (901, 100)]
    small = list(iter_line_blocks(path, max_lines=1000, max_bytes=4096))
    assert all(len(b.data) <= 4096 for b in small) and sum(b.num_lines for b in small) == 1000
    growing = list(iter_line_blocks(path, max_lines=300, first_lines=50))
    assert [b.num_lines for b in growing] == [50, 100, 200, 300, 300, 50]
    resumed = list(iter_line_blocks(path, start_after=950, max_lines=300))
    assert [(b.first_line, b.num_lines) for b in resumed] == [(951, 50)]
    assert json.loads(resumed[0].raw_line(0))["_key"] == "k950"


def test_the_arrow_path_and_the_line_by_line_path_agree(tmp_path):
    products = _products(2000)
    path = tmp_path / "x.data.json"
    path.write_bytes(_lines([{"type": 2300, "data": p} for p in products]))
    (block,) = iter_line_blocks(path, max_lines=5000)
    fast = parse_block(block, "document")
    assert fast.python_lines == 0 and fast.lines_read == 2000
    bad = tmp_path / "y.data.json"
    bad.write_bytes(_lines([{"type": 2300, "data": p} for p in products[:1500]] + [b"{oops"]
                           + [{"type": 2300, "data": p} for p in products[1500:]]))
    (block,) = iter_line_blocks(bad, max_lines=5000)
    skipped = parse_block(block, "document", stop_at_error=False)
    assert [r.line for r in skipped.rejected] == [1501] and skipped.python_lines < 1000
    rows = [row for op in skipped.operations
            for row in (op.table.to_pylist() if op.table is not None else op.documents)]
    assert rows == products


def test_parsed_tables_arrive_checked_with_the_last_row_of_a_repeated_key(tmp_path):
    """The parser (in the read-ahead thread) validates and de-duplicates, so the store's
    writer skips its own checks; both the Arrow and the line-by-line path do it."""
    edges = [{"_key": "e1", "_from": "p/a", "_to": "p/b", "w": 1}, {"_key": "e2", "_from": "p/a", "_to": "p/c", "w": 2},
             {"_key": "e1", "_from": "p/a", "_to": "p/d", "w": 3}]
    path = tmp_path / "e.data.json"
    path.write_bytes(_lines(edges))
    (block,) = iter_line_blocks(path)
    (fast,) = parse_block(block, "edge").operations
    assert fast.checked and fast.table.to_pylist() == edges[1:]
    path.write_bytes(_lines(edges[:2]) + b"{oops\n" + _lines(edges[2:]))
    (block,) = iter_line_blocks(path)
    parsed = parse_block(block, "edge", stop_at_error=False)
    assert [r.line for r in parsed.rejected] == [3]
    assert all(op.checked for op in parsed.operations)
    assert [op.table.column("_key").to_pylist() for op in parsed.operations] == [["e1", "e2"], ["e1"]]
    store = EmbeddedStore(tmp_path / "s.duckdb", create=True)
    store.create_collection("links", "edge")
    for op in parsed.operations:
        store.upsert_table("links", op.table, checked=True)
    assert [d["_to"] for d in store.get_documents("links", ["e1", "e2"])] == ["p/d", "p/c"]


def test_a_stop_mid_file_leaves_no_reading_threads_behind(tmp_path):
    lines = [json.dumps({"_key": f"k{i}", "n": i}).encode() for i in range(30_000)]
    lines[5_000] = b'{"_key": "broken", '
    dump = _hand_dump(tmp_path / "d", {
        f"things_{_md5('things')}.structure.json": _structure("things"),
        f"things_{_md5('things')}.data.json.gz": _lines(lines),
    })
    with open_store(str(tmp_path / "s.duckdb"), create=True) as store:
        with pytest.raises(DumpFormatError, match="line 5001") as caught:
            restore_dumps(store, [dump], batch_size=1_000)
        assert len(store.select_keys("things")) == 5_000
    # checked while the error (and the frames its traceback holds) is still alive
    assert [t.name for t in threading.enumerate() if t.name == "restore-read-ahead"] == []
    assert caught.value.line == 5_001
