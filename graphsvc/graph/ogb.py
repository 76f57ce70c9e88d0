"""Read a node-classification dataset in the layout the `ogb` package writes to disk
(ogbn-products and friends), without the `ogb` package and without downloading::

    ogbn_products/
        raw/edge.csv.gz            one "source,target" pair per line, each undirected edge once
            num-node-list.csv.gz   one line: the number of nodes
            num-edge-list.csv.gz   one line: the number of edges (checked when present)
            node-feat.csv.gz       one line of comma-separated floats per node
            node-label.csv.gz      one class id per node (empty or NaN: unlabelled)
        split/<name>/{train,valid,test}.csv.gz   one node index per line (ogbn-products: sales_ranking)
        processed/data_processed   what ogb's NodePropPredDataset saves after its first load

`raw/` is read when it has `edge.csv.gz`; otherwise `processed/data_processed` (a torch
file of numpy arrays, loaded with only numpy's array types allowed).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from graphsvc.errors import DatasetFormatError
from graphsvc.graph import CSRGraph
from graphsvc.graph.datasets import NodeGraph
from graphsvc.graph.splits import SPLIT_NAMES

DATASET_DIR = "ogbn_products"
PROCESSED_FILE = "data_processed"


def find_dataset_root(root: Path) -> Path:
    """`root` itself when it holds raw/ or processed/, else `root/ogbn_products`
    (the directory `ogb` was given as `root=`)."""
    root = Path(root)
    for candidate in (root, root / DATASET_DIR):
        if (candidate / "raw").is_dir() or (candidate / "processed").is_dir():
            return candidate
    if not root.exists():
        raise DatasetFormatError(str(root), "does not exist")
    raise DatasetFormatError(str(root), "no raw/ or processed/ directory (nor ogbn_products/ holding them) — "
                                        "expected the layout the ogb package writes")


def _first_line(path: Path) -> str:
    with gzip.open(path, "rt") as handle:
        return handle.readline()


def _read_csv(path: Path, types: list[pa.DataType], what: str) -> pa.Table:
    """A header-less CSV of exactly len(types) columns; a bad line is an error naming it."""
    names = [f"c{i}" for i in range(len(types))]
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=names, block_size=1 << 24),
            convert_options=pacsv.ConvertOptions(column_types=dict(zip(names, types)), strings_can_be_null=True),
        )
    except FileNotFoundError:
        raise DatasetFormatError(str(path), f"is missing ({what})") from None
    except (pa.ArrowInvalid, OSError, EOFError) as exc:
        raise DatasetFormatError(str(path), f"not a valid {what}: {str(exc).splitlines()[0]}") from None
    return table


def _column_count(path: Path, what: str) -> int:
    try:
        first = _first_line(path)
    except FileNotFoundError:
        raise DatasetFormatError(str(path), f"is missing ({what})") from None
    except (OSError, EOFError) as exc:
        raise DatasetFormatError(str(path), f"cannot read it: {exc}") from None
    if not first.strip():
        raise DatasetFormatError(str(path), f"is empty ({what})", line=1)
    return first.count(",") + 1


def _check_indices(path: Path, values: np.ndarray, num_nodes: int) -> None:
    bad = np.flatnonzero(((values < 0) | (values >= num_nodes)).reshape(len(values), -1).any(axis=1)) \
        if values.size else np.zeros(0, np.int64)
    if bad.size:
        row = int(bad[0])
        shown = ",".join(str(v) for v in np.atleast_1d(values[row]))
        raise DatasetFormatError(str(path), f"node index {shown} is outside 0..{num_nodes - 1}", line=row + 1)


def _read_count(path: Path, what: str) -> int | None:
    if not path.exists():
        return None
    table = _read_csv(path, [pa.int64()], what)
    if table.num_rows != 1 or table.column(0).null_count:
        raise DatasetFormatError(str(path), f"expected one line with {what} (one graph), found {table.num_rows}")
    return int(table.column(0)[0].as_py())


def _read_raw(directory: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int]:
    raw = directory / "raw"
    edge_path, feat_path = raw / "edge.csv.gz", raw / "node-feat.csv.gz"
    edges_table = _read_csv(edge_path, [pa.int64(), pa.int64()], "edge list (two node indices per line)")
    if edges_table.column(0).null_count or edges_table.column(1).null_count:
        column = edges_table.column(0) if edges_table.column(0).null_count else edges_table.column(1)
        row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise DatasetFormatError(str(edge_path), "an edge needs two node indices", line=row + 1)
    edges = np.stack([edges_table.column(i).to_numpy() for i in (0, 1)], axis=1)

    dim = _column_count(feat_path, "node features")
    features_table = _read_csv(feat_path, [pa.float32()] * dim, f"node feature file ({dim} floats per line)")
    features = np.empty((features_table.num_rows, dim), np.float32)
    for i, column in enumerate(features_table.columns):
        if column.null_count:
            row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            raise DatasetFormatError(str(feat_path), f"feature {i + 1} of {dim} is empty", line=row + 1)
        features[:, i] = column.to_numpy()

    num_nodes = _read_count(raw / "num-node-list.csv.gz", "the number of nodes")
    if num_nodes is None:
        num_nodes = len(features)
    if len(features) != num_nodes:
        raise DatasetFormatError(str(feat_path), f"has {len(features)} lines for {num_nodes} nodes "
                                                 f"(raw/num-node-list.csv.gz)")
    num_edges = _read_count(raw / "num-edge-list.csv.gz", "the number of edges")
    if num_edges is not None and num_edges != len(edges):
        raise DatasetFormatError(str(edge_path), f"has {len(edges)} edges, raw/num-edge-list.csv.gz says {num_edges}")
    _check_indices(edge_path, edges, num_nodes)

    labels = None
    label_path = raw / "node-label.csv.gz"
    if label_path.exists():
        labels = _labels(label_path, _read_csv(label_path, [pa.float64()], "label file (one class per line)")
                         .column(0).to_numpy(zero_copy_only=False), num_nodes)
    return edges, features, labels, num_nodes


def _labels(path: Path, values: np.ndarray, num_nodes: int) -> np.ndarray:
    values = np.asarray(values, np.float64).reshape(len(values), -1)[:, 0] if len(values) else np.zeros(0)
    if len(values) != num_nodes:
        raise DatasetFormatError(str(path), f"has {len(values)} labels for {num_nodes} nodes")
    missing = np.isnan(values)
    bad = np.flatnonzero(~missing & ((values < 0) | (values != np.round(values))))
    if bad.size:
        raise DatasetFormatError(str(path), f"label {values[bad[0]]} is not a class id", line=int(bad[0]) + 1)
    return np.where(missing, -1, values).astype(np.int64)


def _read_processed(directory: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int]:
    import torch

    path = directory / "processed" / PROCESSED_FILE
    if not path.exists():
        raise DatasetFormatError(str(directory), "has neither raw/edge.csv.gz nor processed/data_processed")
    # numpy arrays pickled by ogb; allow exactly the types needed to rebuild them
    allowed = [np.ndarray, np.dtype, np.core.multiarray._reconstruct,
               type(np.dtype(np.float32)), type(np.dtype(np.int64)), type(np.dtype(np.float64))]
    try:
        with torch.serialization.safe_globals(allowed):
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        graph, labels = loaded["graph"], loaded.get("labels", loaded.get("label"))
        edge_index = np.asarray(graph["edge_index"], np.int64)
        features = np.asarray(graph["node_feat"], np.float32)
        num_nodes = int(graph["num_nodes"])
    except Exception as exc:  # a foreign pickle raises many kinds of errors
        raise DatasetFormatError(str(path), f"not the file ogb's NodePropPredDataset writes: {exc}") from None
    if edge_index.ndim != 2 or edge_index.shape[0] != 2:
        raise DatasetFormatError(str(path), f"edge_index has shape {edge_index.shape}, expected (2, E)")
    if features.ndim != 2 or len(features) != num_nodes:
        raise DatasetFormatError(str(path), f"node_feat has shape {features.shape} for {num_nodes} nodes")
    edges = edge_index.T
    _check_indices(path, edges, num_nodes)
    if labels is not None:
        labels = _labels(path, np.asarray(labels, np.float64), num_nodes)
    return edges, features, labels, num_nodes


def _read_split(directory: Path, name: str | None, num_nodes: int) -> tuple[str | None, dict[str, np.ndarray] | None]:
    split_root = directory / "split"
    available = sorted(p.name for p in split_root.iterdir() if p.is_dir()) if split_root.is_dir() else []
    if name is None:
        if not available:
            return None, None
        if len(available) > 1:
            raise DatasetFormatError(str(split_root), f"holds several splits ({', '.join(available)}); choose one")
        name = available[0]
    elif name not in available:
        raise DatasetFormatError(str(split_root / name), f"no such split (found: {', '.join(available) or 'none'})")
    splits = {}
    for part in SPLIT_NAMES:
        path = split_root / name / f"{part}.csv.gz"
        table = _read_csv(path, [pa.int64()], f"{part} node list (one index per line)")
        if table.column(0).null_count:
            row = int(np.flatnonzero(table.column(0).is_null().to_numpy(zero_copy_only=False))[0])
            raise DatasetFormatError(str(path), "an empty line in a node list", line=row + 1)
        indices = table.column(0).to_numpy()
        _check_indices(path, indices, num_nodes)
        splits[part] = indices.astype(np.int64)
    return name, splits


def load_ogb_node_dataset(root: Path, split: str | None = None) -> NodeGraph:
    """The graph, features, labels and split of an OGB node dataset on disk. Node i gets
    the key str(i). Edges are made undirected, as ogb does for ogbn-products."""
    directory = find_dataset_root(root)
    if (directory / "raw" / "edge.csv.gz").exists():
        edges, features, labels, num_nodes = _read_raw(directory)
    else:
        edges, features, labels, num_nodes = _read_processed(directory)
    split_name, splits = _read_split(directory, split, num_nodes)
    if labels is not None and splits is not None:
        for part, nodes in splits.items():
            unlabelled = nodes[labels[nodes] < 0]
            if unlabelled.size:
                raise DatasetFormatError(str(directory / "split" / split_name / f"{part}.csv.gz"),
                                         f"node {unlabelled[0]} has no label")
    graph = CSRGraph.from_edges(edges[:, 0], edges[:, 1], num_nodes)
    keys = pa.array(np.arange(num_nodes).astype(str), pa.string())
    source = f"ogb:{directory}" + (f" split {split_name}" if split_name else "")
    return NodeGraph(keys, features, labels, graph, 0, splits, source=source)
