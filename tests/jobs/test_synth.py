import gzip
import json
import zlib
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from graphsvc.store import open_store
from graphsvc.store.dumps import open_dump
from jobs.catalogue import Catalogue, CatalogueSpec
from jobs.cli import cli
from jobs.synth import write_catalogue_dump


def _all_edges(catalogue: Catalogue) -> tuple[np.ndarray, np.ndarray]:
    chunks = [catalogue.edges(c) for c in range(catalogue.spec.num_chunks)]
    return np.concatenate([c.sources for c in chunks]), np.concatenate([c.targets for c in chunks])


def _lines(path: Path) -> list[bytes]:
    return gzip.decompress(path.read_bytes()).splitlines()


def test_catalogue_has_the_asked_counts_a_degree_tail_categories_and_ogb_split_shares():
    spec = CatalogueSpec(20_000, 400_000, seed=3)
    catalogue = Catalogue(spec)
    sources, targets = _all_edges(catalogue)
    assert len(sources) == spec.num_edges
    assert (sources < targets).all()  # no self-loops; each pair once, smaller end first
    assert len(np.unique(sources * spec.num_products + targets)) == spec.num_edges
    degree = np.bincount(sources, minlength=spec.num_products) + np.bincount(targets, minlength=spec.num_products)
    assert degree.mean() == 40
    assert np.median(degree) < 0.7 * degree.mean() and degree.max() > 8 * degree.mean()  # a power-law tail
    labels = catalogue.labels
    assert set(np.unique(labels)) == set(range(47))
    sizes = np.sort(np.bincount(labels))
    assert sizes[-1] > 20 * sizes[0]  # skewed category sizes
    assert (labels[sources] == labels[targets]).mean() > 0.5  # homophily
    shares = np.bincount(catalogue.splits, minlength=3) / spec.num_products
    assert np.allclose(shares, [196_615 / 2_449_029, 39_323 / 2_449_029, 2_213_091 / 2_449_029], atol=1e-4)
    # best sellers train, as OGB's sales-rank split: training products have more co-purchases
    assert degree[catalogue.splits == 0].mean() > 2 * degree[catalogue.splits == 2].mean()
    products = catalogue.products(0)
    assert products.features.shape == (spec.chunk_size, 100) and products.features.dtype == np.float32


def test_features_carry_category_signal_without_giving_the_label_away():
    catalogue = Catalogue(CatalogueSpec(20_000, 400_000, seed=1))
    features = np.concatenate([catalogue.products(c).features for c in range(catalogue.spec.num_chunks)])
    labels = catalogue.labels
    centroids = np.stack([features[labels == k].mean(0) for k in range(47)])
    nearest = ((features[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
    accuracy = (nearest == labels).mean()
    assert 0.3 < accuracy < 0.85, accuracy


def _write(out: Path, seed: int, threads: int = 2) -> dict:
    return write_catalogue_dump(out, CatalogueSpec(3_000, 60_000, seed=seed), files=4, threads=threads)


def _file_bytes(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_one_seed_gives_byte_identical_dumps_whatever_the_threads_and_another_seed_differs(tmp_path):
    _write(tmp_path / "a", seed=5, threads=2)
    _write(tmp_path / "b", seed=5, threads=1)
    _write(tmp_path / "c", seed=6)
    a, b, c = (_file_bytes(tmp_path / d) for d in "abc")
    assert a == b
    assert a.keys() == c.keys()
    data = [name for name in a if ".data.json.gz" in name and not name.startswith("_graphs")]
    assert all(a[name] != c[name] for name in data)
    assert not list(tmp_path.glob(".*"))  # built aside and renamed into place


def test_split_gzip_files_hold_plain_documents_and_restore_to_the_counts(tmp_path):
    out = tmp_path / "dump"
    result = CliRunner().invoke(cli, ["synth", "products", "--nodes", "3000", "--edges", "60000", "--seed", "2",
                                      "--files", "4", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    written = json.loads(result.stdout)
    assert (written["products"], written["bought_together"]) == (3000, 60000)
    assert written["files"] == {"products": 4, "bought_together": 4}
    dump = open_dump(out)
    for name in ("products", "bought_together"):
        files = dump.collection(name).data_files
        assert [f.name.split(".")[1] for f in files] == ["0", "1", "2", "3"]
        assert all(f.name.endswith(".data.json.gz") for f in files)
    first = json.loads(_lines(dump.collection("products").data_files[1])[0])
    assert list(first) == ["_key", "title", "category", "split", "features"]
    assert first["split"] in ("train", "valid", "test") and 0 <= first["category"] < 47
    assert len(first["features"]) == 100 and all(isinstance(v, float) for v in first["features"])
    edge = json.loads(_lines(dump.collection("bought_together").data_files[2])[0])
    assert edge["_from"].startswith("products/P") and edge["_to"].startswith("products/P")

    store_path = tmp_path / "s.duckdb"
    result = CliRunner().invoke(cli, ["--store", str(store_path), "restore-dumps", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["totals"]["written"] == 63_000 and summary["totals"]["dangling_edges"] == 0
    assert summary["graphs"] == ["products_graph"]
    with open_store(str(store_path)) as store:
        assert store.collection("products").count == 3000
        assert store.collection("bought_together").count == 60000
        (doc,) = store.get_documents("products", [first["_key"]])
        assert doc["features"] == first["features"] and doc["split"] == first["split"]


def _complete_lines_before_damage(data: bytes) -> int:
    inflater, text = zlib.decompressobj(wbits=31), b""
    while data:
        try:
            text += inflater.decompress(data)
        except zlib.error:
            break
        data = inflater.unused_data
        if inflater.eof and data:
            inflater = zlib.decompressobj(wbits=31)
        elif not inflater.eof:
            break
    return text.count(b"\n")


def test_truncated_gzip_in_a_middle_split_file_stops_with_its_line_and_resume_skips_committed_blocks(tmp_path):
    out = tmp_path / "dump"
    write_catalogue_dump(out, CatalogueSpec(3_000, 60_000, seed=4), files=4)
    edge_files = open_dump(out).collection("bought_together").data_files
    bad = edge_files[2]
    before = sum(len(_lines(f)) for f in edge_files[:2])
    in_bad = len(_lines(bad))
    intact = bad.read_bytes()
    bad.write_bytes(intact[: len(intact) // 2])
    good_lines = _complete_lines_before_damage(bad.read_bytes())
    assert 0 < good_lines < in_bad

    store_path = tmp_path / "s.duckdb"
    runner = CliRunner()
    result = runner.invoke(cli, ["--store", str(store_path), "restore-dumps", str(out), "--batch-size", "1000"])
    assert result.exit_code == 1
    (message,) = result.stderr.strip().splitlines()
    assert message.startswith("error: ") and f"{bad.name} line {good_lines + 1}: corrupt gzip stream" in message
    assert "--resume" in message
    with open_store(str(store_path)) as store:
        assert store.collection("products").count == 3000
        assert store.collection("bought_together").count == before + good_lines  # all lines before the damage
        marker = store.change_marker("products")

    bad.write_bytes(intact)  # the file fetched again
    result = runner.invoke(cli, ["--store", str(store_path), "restore-dumps", str(out), "--batch-size", "1000",
                                 "--resume", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    rows = {r["collection"]: r for r in summary["collections"]}
    assert rows["products"]["status"] == "already restored"
    assert rows["bought_together"]["resumed_from"] == {"file": bad.name, "line": good_lines}
    assert rows["bought_together"]["read"] == 60_000
    # only what came after the last committed line was read again
    assert summary["totals"]["read_this_run"] == 60_000 - before - good_lines
    with open_store(str(store_path)) as store:
        assert store.collection("bought_together").count == 60_000
        assert store.change_marker("products") == marker


def test_an_ogb_dataset_is_written_as_the_same_dump_and_restores_exactly(tmp_path):
    from graphsvc.graph.ogb import load_ogb_node_dataset
    from jobs.synth import ProductGraphSpec
    from tests.jobs.sample_graphs import write_ogb_directory

    directory, graph, split = write_ogb_directory(tmp_path / "ogb", ProductGraphSpec(num_products=700, seed=5))
    out = tmp_path / "dump"
    result = CliRunner().invoke(cli, ["synth", "products", "--ogb-root", str(directory), "--out", str(out),
                                      "--files", "3", "--json"])
    assert result.exit_code == 0, result.output
    assert len(list(out.glob("bought_together_*.data.json.gz"))) == 3
    store_path = tmp_path / "store.duckdb"
    restored = CliRunner().invoke(cli, ["--store", str(store_path), "restore-dumps", str(out), "--json"])
    assert restored.exit_code == 0, restored.output
    data = load_ogb_node_dataset(directory)
    with open_store(str(store_path)) as store:
        assert store.collection("products").count == 700
        assert store.collection("bought_together").count == len(graph.edges)
        keys = [f"P{i:07d}" for i in (0, 123, 699)]
        for i, document in zip((0, 123, 699), store.get_documents("products", keys)):
            # every float32 as it was (the two-decimal rounding of the synthetic catalogue would fail this)
            np.testing.assert_array_equal(np.array(document["features"], np.float32), data.features[i])
            assert document["category"] == int(data.labels[i])
            assert document["split"] == next(name for name, nodes in split.items() if i in set(nodes))
        pairs = {(int(a["_from"][10:]), int(a["_to"][10:])) for batch in store.pull_edges("bought_together")
                 for a in batch.to_pylist()}
    assert pairs == {tuple(p) for p in graph.edges.tolist()}


def test_ogb_root_with_a_size_is_refused(tmp_path):
    (tmp_path / "ogb").mkdir()
    result = CliRunner().invoke(cli, ["synth", "products", "--ogb-root", str(tmp_path / "ogb"), "--nodes", "100",
                                      "--out", str(tmp_path / "d")])
    assert result.exit_code == 1 and "--ogb-root" in result.output


def test_the_committed_movies_dump_is_what_synth_movies_writes_with_users_of_planted_tastes(tmp_path):
    from jobs.synth import DemoUsersSpec
    from tests.support import REPO_ROOT

    committed = REPO_ROOT / "arango_dumps" / "movies"
    result = CliRunner().invoke(cli, ["synth", "movies", "--out", str(tmp_path / "movies"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"movies": 202, "genres": 18, "directors": 45, "has_genre": 445,
                                         "directed_by": 202, "users": 400, "rated": 8026}
    # byte for byte: the shipped dump is reproducible (regenerate it with 'jobs synth movies')
    files = sorted(p.name for p in committed.iterdir())
    assert files == sorted(p.name for p in (tmp_path / "movies").iterdir())
    assert all((committed / f).read_bytes() == (tmp_path / "movies" / f).read_bytes() for f in files)

    def rows(prefix: str) -> list[dict]:
        return [json.loads(line) for line in _lines(next(committed.glob(f"{prefix}_*.data.json.gz")))]

    genres = {m["_key"]: set(m["genres"]) for m in rows("movies")}
    users = {u["_key"]: set(u["likes"]) for u in rows("users")}
    rated = rows("rated")
    spec = DemoUsersSpec()
    assert len(users) == spec.users and {"u0399", "u0400"}.isdisjoint({r["_from"][6:] for r in rated})
    assert all(1 <= r["rating"] <= 5 and r["timestamp"] > 0 and r["_to"][7:] in genres for r in rated)
    fan = np.array([bool(users[r["_from"][6:]] & genres[r["_to"][7:]]) for r in rated])
    stars = np.array([r["rating"] for r in rated])
    assert fan.mean() > 0.85  # users pick mostly from the genres they like …
    assert stars[fan].mean() > 4 and stars[~fan].mean() < 3  # … and rate those higher
    assert users["u0003"] == {"Crime"}  # the user scripts/demo.sh asks for
