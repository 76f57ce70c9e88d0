"""Arrow pulls and attribute write-back on the embedded store, against the workshop's way
measured in the same run.

    .venv/bin/python bench/store_throughput.py [--rows 1000000] [--json]

- pull: `_key` + 100-d `features` of N products as Arrow record batches, against reading
  the same documents one JSON document at a time (what the notebooks did), on a sample;
- write-back: a 256-d `embedding` plus a 10-entry `similar` list for N products in one
  bulk call, against `update_many`-style batches of 250 documents, on a sample.

Each phase runs in a child process of its own so that its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphsvc.index.similar import embedding_array  # noqa: E402
from graphsvc.store import open_store  # noqa: E402

BATCH = 100_000


def _keys(start: int, stop: int) -> pa.Array:
    return pa.array([f"P{i:08d}" for i in range(start, stop)], pa.string())


def _similar(start: int, stop: int, total: int) -> pa.Array:
    rows = stop - start
    neighbours = (np.arange(start, stop)[:, None] + np.arange(1, 11)[None, :]) % total
    keys = pa.array([f"P{i:08d}" for i in neighbours.reshape(-1)], pa.string())
    scores = pa.array(np.linspace(1, 0.5, 10, dtype=np.float32).repeat(1)[None, :].repeat(rows, 0).reshape(-1))
    offsets = pa.array(np.arange(0, rows * 10 + 1, 10, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.StructArray.from_arrays([keys, scores], names=["_key", "score"]))


def phase_load(store_path: str, rows: int) -> dict:
    rng = np.random.default_rng(0)
    with open_store(store_path, create=True) as store:
        store.create_collection("products")
        started = time.perf_counter()
        for start in range(0, rows, BATCH):
            stop = min(rows, start + BATCH)
            features = rng.normal(size=(stop - start, 100)).astype(np.float32)
            store.upsert_table("products", pa.table({
                "_key": _keys(start, stop), "category": pa.array(np.arange(start, stop) % 47),
                "features": embedding_array(features),
            }))
        return {"rows_per_s": rows / (time.perf_counter() - started)}


def phase_pull(store_path: str, rows: int) -> dict:
    with open_store(store_path) as store:
        started = time.perf_counter()
        pulled, checksum = 0, 0.0
        for batch in store.pull("products", {"features": pa.list_(pa.float32())}):
            values = batch.column(1).flatten().to_numpy()
            checksum += float(values[:100].sum())
            pulled += batch.num_rows
        seconds = time.perf_counter() - started
    assert pulled == rows, (pulled, rows)
    return {"rows": pulled, "seconds": seconds, "rows_per_s": pulled / seconds}


def phase_pull_one_by_one(store_path: str, rows: int, sample: int) -> dict:
    keys = [f"P{i:08d}" for i in np.random.default_rng(1).choice(rows, size=sample, replace=False)]
    with open_store(store_path) as store:
        started = time.perf_counter()
        matrix = np.stack([np.asarray(store.get_documents("products", [k])[0]["features"], np.float32) for k in keys])
        seconds = time.perf_counter() - started
    assert matrix.shape == (sample, 100)
    return {"rows": sample, "seconds": seconds, "rows_per_s": sample / seconds}


def phase_write_back(store_path: str, rows: int) -> dict:
    rng = np.random.default_rng(2)
    embeddings = rng.normal(size=(rows, 256)).astype(np.float32)
    table = pa.table({
        "_key": _keys(0, rows), "embedding": embedding_array(embeddings), "similar": _similar(0, rows, rows),
    })
    with open_store(store_path) as store:
        started = time.perf_counter()
        store.update_attributes("products", table)
        seconds = time.perf_counter() - started
        check = store.get_documents("products", ["P00000042"])[0]
    assert len(check["embedding"]) == 256 and len(check["similar"]) == 10
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds}


def phase_write_back_250(store_path: str, rows: int, sample: int) -> dict:
    rng = np.random.default_rng(3)
    with open_store(store_path) as store:
        started = time.perf_counter()
        for start in range(0, sample, 250):
            stop = min(sample, start + 250)
            store.update_attributes("products", pa.table({
                "_key": _keys(start, stop),
                "embedding": embedding_array(rng.normal(size=(stop - start, 256)).astype(np.float32)),
                "similar": _similar(start, stop, rows),
            }))
        seconds = time.perf_counter() - started
    return {"rows": sample, "seconds": seconds, "rows_per_s": sample / seconds}


PHASES = {
    "load": phase_load,
    "pull": phase_pull,
    "pull_one_by_one": phase_pull_one_by_one,
    "write_back": phase_write_back,
    "write_back_250": phase_write_back_250,
}


def run_phase(name: str, *args) -> dict:
    """Run a phase in a fresh interpreter; its peak RSS is reported with its figures."""
    output = subprocess.run(
        [sys.executable, __file__, "--phase", name, *map(str, args)], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=2_000, help="documents for the one-at-a-time baselines")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--phase", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.phase:
        name, *rest = args.phase
        figures = PHASES[name](rest[0], *map(int, rest[1:]))
        figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(figures))
        return

    with tempfile.TemporaryDirectory(prefix="graphsvc-bench-") as tmp:
        store = os.path.join(tmp, "store.duckdb")
        figures = {"rows": args.rows, "load": run_phase("load", store, args.rows)}
        figures["pull"] = run_phase("pull", store, args.rows)
        figures["pull_one_by_one"] = run_phase("pull_one_by_one", store, args.rows, args.sample)
        figures["write_back"] = run_phase("write_back", store, args.rows)
        figures["write_back_250"] = run_phase("write_back_250", store, args.rows, args.sample)
        figures["store_mb"] = os.path.getsize(store) / 1e6
    figures["pull_ratio"] = figures["pull"]["rows_per_s"] / figures["pull_one_by_one"]["rows_per_s"]
    figures["write_back_ratio"] = figures["write_back"]["rows_per_s"] / figures["write_back_250"]["rows_per_s"]

    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"embedded store, {args.rows:,} products (100-d features), store file {figures['store_mb']:,.0f} MB")
    print(f"{'phase':<34}{'rows/s':>12}{'peak RSS MB':>14}")
    rows = [
        ("load (upsert_table, 100k batches)", figures["load"]),
        ("pull features as Arrow", figures["pull"]),
        ("  workshop: one document at a time", figures["pull_one_by_one"]),
        ("write-back embedding+similar, bulk", figures["write_back"]),
        ("  workshop: batches of 250", figures["write_back_250"]),
    ]
    for label, f in rows:
        print(f"{label:<34}{f['rows_per_s']:>12,.0f}{f['peak_rss_mb']:>14,.0f}")
    print(f"pull: {figures['pull_ratio']:,.0f}x the one-at-a-time way (goal: >= 1,000,000 rows/s)")
    print(f"write-back: {figures['write_back_ratio']:,.1f}x batches of 250 (goal: >= 200,000 rows/s)")
    print(f"baselines measured on {args.sample:,} documents in the same run")


if __name__ == "__main__":
    main()
