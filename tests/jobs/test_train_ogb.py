"""`jobs train-graphsage --ogb-root`: a tiny directory in the layout `ogb` writes for
ogbn-products, made by the test; the reader's checks on malformed files."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from graphsvc.errors import DatasetFormatError
from graphsvc.graph.ogb import load_ogb_node_dataset
from graphsvc.graph.splits import undirected_pairs
from graphsvc.models.checkpoints import metrics_path
from jobs.cli import cli
from jobs.synth import ProductGraphSpec
from tests.jobs.sample_graphs import write_ogb_directory

SPEC = ProductGraphSpec(num_products=300, num_categories=5, seed=4)


@pytest.fixture
def ogb(tmp_path):
    return write_ogb_directory(tmp_path, SPEC)


def test_reader_returns_the_graph_features_labels_and_split_as_written(ogb, tmp_path):
    directory, graph, split = ogb
    # the root ogb was given (holding ogbn_products/) and the dataset directory itself both work
    for root in (tmp_path, directory):
        data = load_ogb_node_dataset(root)
        assert len(data.keys) == SPEC.num_products and data.keys[7].as_py() == "7"
        np.testing.assert_allclose(data.features, graph.features, atol=1e-5)
        np.testing.assert_array_equal(data.labels, graph.categories)
        assert {tuple(p) for p in undirected_pairs(data.graph).tolist()} == {tuple(p) for p in graph.edges.tolist()}
        for name in ("train", "valid", "test"):
            np.testing.assert_array_equal(data.splits[name], split[name])
        assert "sales_ranking" in data.source


def test_cli_trains_on_the_ogb_split(ogb, tmp_path):
    directory, _, split = ogb
    out = tmp_path / "ogb.pth.tar"
    result = CliRunner().invoke(cli, ["train-graphsage", "--ogb-root", str(directory), "--out", str(out),
                                      "--epochs", "3", "--hidden", "16", "--fanouts", "5,5", "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["split"]["source"] == "dataset"
    assert metrics["split"]["sizes"] == {name: len(nodes) for name, nodes in split.items()}
    assert metrics["data"]["ogb_root"] == str(directory)
    assert metrics["num_nodes"] == SPEC.num_products and metrics["feature_dim"] == 100
    assert json.loads(metrics_path(out).read_text())["accuracy"] == metrics["accuracy"]
    checkpoint = torch.load(out, weights_only=True)
    assert checkpoint["state_dict"]["convs.1.lin_l.weight"].shape == (SPEC.num_categories, 16)


def test_processed_file_is_read_when_raw_is_absent(ogb, tmp_path):
    directory, graph, _ = ogb
    edge_index = np.concatenate([graph.edges, graph.edges[:, ::-1]]).T.copy()  # ogb stores both directions
    (directory / "processed").mkdir()
    torch.save({"graph": {"edge_index": edge_index, "node_feat": graph.features, "edge_feat": None,
                          "num_nodes": SPEC.num_products},
                "labels": graph.categories.reshape(-1, 1).astype(np.int64)},
               directory / "processed" / "data_processed")
    for name in ("edge.csv.gz", "node-feat.csv.gz", "node-label.csv.gz"):
        (directory / "raw" / name).unlink()
    data = load_ogb_node_dataset(directory)
    np.testing.assert_array_equal(data.labels, graph.categories)
    np.testing.assert_allclose(data.features, graph.features)
    assert data.graph.num_edges == 2 * len(graph.edges)


def _rewrite(path, change):
    with gzip.open(path, "rt") as handle:
        lines = handle.read().splitlines()
    change(lines)
    with gzip.open(path, "wt") as handle:
        handle.write("\n".join(lines) + "\n")


def test_edge_to_a_missing_node_names_file_and_line(ogb):
    directory, _, _ = ogb
    _rewrite(directory / "raw" / "edge.csv.gz", lambda lines: lines.__setitem__(41, "3,300"))
    with pytest.raises(DatasetFormatError, match=r"edge\.csv\.gz line 42: node index 3,300 is outside 0\.\.299"):
        load_ogb_node_dataset(directory)


def test_malformed_feature_line_is_one_line_error_on_the_cli(ogb, tmp_path):
    directory, _, _ = ogb
    _rewrite(directory / "raw" / "node-feat.csv.gz", lambda lines: lines.__setitem__(9, "0.1,abc"))
    result = CliRunner().invoke(cli, ["train-graphsage", "--ogb-root", str(directory), "--out",
                                      str(tmp_path / "m.pth.tar")])
    assert result.exit_code == 1
    assert "node-feat.csv.gz" in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m.pth.tar").exists()


def test_feature_count_must_match_the_node_count(ogb):
    directory, _, _ = ogb
    _rewrite(directory / "raw" / "node-feat.csv.gz", lambda lines: lines.pop())
    with pytest.raises(DatasetFormatError, match="299 lines for 300 nodes"):
        load_ogb_node_dataset(directory)


def test_split_index_out_of_range_names_the_split_file(ogb):
    directory, _, _ = ogb
    _rewrite(directory / "split" / "sales_ranking" / "valid.csv.gz", lambda lines: lines.__setitem__(0, "1000"))
    with pytest.raises(DatasetFormatError, match=r"valid\.csv\.gz line 1: node index 1000"):
        load_ogb_node_dataset(directory)


def test_directory_without_the_layout_is_refused(tmp_path):
    with pytest.raises(DatasetFormatError, match="no raw/ or processed/"):
        load_ogb_node_dataset(tmp_path)
