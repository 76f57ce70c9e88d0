"""Small graphs for the training and evaluation tests: a restored embedded store, and a
directory in the layout the `ogb` package writes for ogbn-products."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from jobs.cli import cli
from jobs.synth import ProductGraph, ProductGraphSpec, generate_product_graph, write_products_dump


def restored_store(root: Path, spec: ProductGraphSpec) -> Path:
    """The synthetic products of `spec` restored into a fresh embedded store."""
    dump, store = root / "dump", root / "store.duckdb"
    write_products_dump(dump, spec)
    result = CliRunner().invoke(cli, ["--store", str(store), "restore-dumps", str(dump)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return store


def _write_csv_gz(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as handle:
        handle.write("".join(line + "\n" for line in lines))


def write_ogb_directory(root: Path, spec: ProductGraphSpec, split_name: str = "sales_ranking",
                        shares: tuple[float, float] = (0.3, 0.2)) -> tuple[Path, ProductGraph, dict]:
    """`root/ogbn_products/{raw,split/<split_name>}` as ogb writes them, from the
    synthetic graph of `spec`. Returns the dataset directory, the graph and the split."""
    graph = generate_product_graph(spec)
    directory = root / "ogbn_products"
    raw = directory / "raw"
    n = spec.num_products
    _write_csv_gz(raw / "edge.csv.gz", [f"{a},{b}" for a, b in graph.edges])
    _write_csv_gz(raw / "num-node-list.csv.gz", [str(n)])
    _write_csv_gz(raw / "num-edge-list.csv.gz", [str(len(graph.edges))])
    _write_csv_gz(raw / "node-feat.csv.gz", [",".join(f"{v:.6f}" for v in row) for row in graph.features])
    _write_csv_gz(raw / "node-label.csv.gz", [str(c) for c in graph.categories])
    order = np.random.default_rng(spec.seed).permutation(n)
    cut_train, cut_valid = int(n * shares[0]), int(n * (shares[0] + shares[1]))
    split = {"train": np.sort(order[:cut_train]), "valid": np.sort(order[cut_train:cut_valid]),
             "test": np.sort(order[cut_valid:])}
    for name, nodes in split.items():
        _write_csv_gz(directory / "split" / split_name / f"{name}.csv.gz", [str(i) for i in nodes])
    (directory / "RELEASE_v1.txt").write_text("ogbn-products layout written by the test\n")
    return directory, graph, split
