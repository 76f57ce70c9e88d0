"""Shared set-up of the reindex tests: a generated product graph in an embedded store,
a seeded GraphSAGE exported for the real Triton server, and ways to change the graph."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from graphsvc.index.similar import embedding_array
from graphsvc.models import graphsage
from graphsvc.store import open_store
from jobs.synth import ProductGraphSpec, generate_product_graph, product_key

SPEC = ProductGraphSpec(num_products=1200, num_categories=8, mean_degree=12.0, seed=5)


def write_graph(store_path: Path, spec: ProductGraphSpec = SPEC) -> None:
    graph = generate_product_graph(spec)
    keys = pa.array([product_key(i) for i in range(spec.num_products)], pa.string())
    with open_store(str(store_path), create=True) as store:
        store.create_collection("products")
        store.create_collection("bought_together", "edge")
        store.upsert_table("products", pa.table({
            "_key": keys, "category": pa.array(graph.categories), "features": embedding_array(graph.features),
        }))
        ends = keys.take(pa.array(graph.edges.reshape(-1)))
        store.upsert_table("bought_together", pa.table({
            "_key": pa.array([f"c{i}" for i in range(len(graph.edges))], pa.string()),
            "_from": pc.binary_join_element_wise("products/", ends.take(pa.array(np.arange(0, len(ends), 2))), ""),
            "_to": pc.binary_join_element_wise("products/", ends.take(pa.array(np.arange(1, len(ends), 2))), ""),
        }))


def export_model(repository: Path, checkpoint: Path) -> None:
    from jobs.export_models import export_graphsage

    torch.manual_seed(3)
    graphsage.save_checkpoint(checkpoint, graphsage.GraphSAGE(100, 64, 8).eval(), epoch=0, best_acc=0.0)
    export_graphsage(repository, checkpoint)


def change_catalogue(store_path: Path, share: float, seed: int = 0) -> dict:
    """Change `share` of the products the way a day does: new features for some,
    co-purchases added, some products removed, a few new products. Returns what changed."""
    rng = np.random.default_rng(seed)
    with open_store(str(store_path)) as store:
        table = pa.Table.from_batches(list(store.pull("products", {"features": pa.list_(pa.float32())})))
        keys = table.column("_key").to_pylist()
        n = len(keys)
        count = max(1, int(round(share * n)))
        chosen = rng.choice(n, size=3 * count, replace=False)
        edited, removed, linked = chosen[:count], chosen[count : count + max(1, count // 4)], chosen[2 * count :]
        features = np.stack(table.column("features").to_numpy(zero_copy_only=False)).astype(np.float32)
        new_features = features[edited] + rng.normal(
            scale=1.0, size=(len(edited), features.shape[1])
        ).astype(np.float32)
        store.upsert_table("products", pa.table({
            "_key": pa.array([keys[i] for i in edited]), "category": pa.array(np.zeros(len(edited), np.int64)),
            "features": embedding_array(new_features),
        }))
        added = [f"N{seed:03d}{i:05d}" for i in range(max(1, count // 4))]
        store.upsert_table("products", pa.table({
            "_key": pa.array(added), "category": pa.array(np.zeros(len(added), np.int64)),
            "features": embedding_array(rng.normal(scale=2.0, size=(len(added), features.shape[1])).astype(np.float32)),
        }))
        partners = rng.choice(n, size=len(linked))
        new_edges = [(keys[a], keys[b]) for a, b in zip(linked, partners) if a != b]
        new_edges += [(a, keys[int(rng.integers(n))]) for a in added for _ in range(3)]
        store.upsert_table("bought_together", pa.table({
            "_key": pa.array([f"e{seed}-{i}" for i in range(len(new_edges))]),
            "_from": pa.array([f"products/{a}" for a, _ in new_edges]),
            "_to": pa.array([f"products/{b}" for _, b in new_edges]),
        }))
        store.remove_documents("products", [keys[i] for i in removed])
    return {"edited": len(edited), "removed": len(removed), "added": len(added), "edges": len(new_edges)}


def attributes(store_path: Path, collection: str = "products") -> dict[str, dict]:
    """key → {embedding, similar, predicted_category} as written back."""
    with open_store(str(store_path)) as store:
        table = pa.Table.from_batches(list(store.pull(collection, {
            "embedding": pa.list_(pa.float32()),
            "similar": pa.list_(pa.struct([("_key", pa.string()), ("score", pa.float32())])),
            "predicted_category": pa.int64(),
        })))
    rows = table.to_pylist()
    return {r["_key"]: r for r in rows}


def copy_store(source: Path, target: Path) -> Path:
    shutil.copy(source, target)
    wal = Path(str(source) + ".wal")
    if wal.exists():
        shutil.copy(wal, Path(str(target) + ".wal"))
    return target


def fresh_copy(root: Path, target: Path) -> tuple[Path, Path]:
    """A copy of a re-indexed store and its index directory (with the reindex state)."""
    copy_store(root / "store.duckdb", target / "store.duckdb")
    shutil.copytree(root / "indexes", target / "indexes")
    return target / "store.duckdb", target / "indexes"
