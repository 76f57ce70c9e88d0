"""`fields=` lookups of 10 keys on the embedded store at the ogbn-products size.

    .venv/bin/python bench/key_lookup.py [--docs 2449029] [--requests 400] [--json]

Printed, each measured in this run on the same file (the machine is shared: read the ratios):

- store directly, 10 random keys per lookup: `get_documents` with index scans switched off
  (the query as it ran before the store had a key index) and as it runs (index probes),
  on a connection held open; and with the file opened per lookup (main's service default).
- through HTTP (`graphsvc serve`, 1 worker, one sequential client):
  `GET /v1/products/{key}/similar?k=10&fields=category,price,title` against the same request
  without fields; main's service (run from --main, the file opened per request) against this
  branch's (one read-only connection held, let go when a job wants to write).
- while a job writes: a writer process opens the store read-write (announcing itself in
  `<store>.writer` and waiting for the service to let go), writes `update_attributes` on
  --write-rows rows and closes, while the client keeps asking; answers by status, p50/p99 of
  each, the writer's wait, and how soon after it closed fields came back.

Data: a synthetic products collection (seeded): `_key` P0000000…, category, price, title,
100-d float32 `features` (restored in key order, as restores insert), then written back
the way `jobs embed-products` does: 256-d `embedding`, a 10-entry `similar` list and
`predicted_category`. Built once with the store's own `upsert_table` / `update_attributes`
in blocks (bounded memory) and cached under --cache (outside the repository).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphsvc.store.embedded import EmbeddedStore  # noqa: E402

BLOCK = 250_000
CATEGORIES = [f"C{i:02d}" for i in range(47)]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _keys(numbers: np.ndarray) -> pa.Array:
    keys = pa.array(np.char.add("P", np.char.zfill(numbers.astype(str), 7)), pa.string())
    return keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys


def key_array(start: int, stop: int) -> pa.Array:
    return _keys(np.arange(start, stop))


def _fixed_lists(values: np.ndarray) -> pa.Array:
    rows, dim = values.shape
    return pa.ListArray.from_arrays(pa.array(np.arange(0, rows * dim + 1, dim, dtype=np.int32)),
                                    pa.array(values.reshape(-1)))


def _similar(rng: np.random.Generator, start: int, stop: int, n: int) -> pa.Array:
    rows = stop - start
    neighbours = rng.integers(0, n, (rows, 10))
    keys = _keys(neighbours.reshape(-1))
    scores = np.sort(rng.uniform(0.5, 1.0, (rows, 10)).astype(np.float32), axis=1)[:, ::-1].reshape(-1)
    entries = pa.StructArray.from_arrays([keys, pa.array(scores)], names=["_key", "score"])
    return pa.ListArray.from_arrays(pa.array(np.arange(0, rows * 10 + 1, 10, dtype=np.int32)), entries)


def build_store(path: Path, n: int) -> Path:
    """The synthetic catalogue at `path`, reused when it holds `n` documents already."""
    if path.exists():
        try:
            with EmbeddedStore(path, create=False, read_only=True) as store:
                if store.get_state("bench:key_lookup") == {"docs": n, "complete": True}:
                    return path
        except Exception:  # a half-built or foreign file: build again
            pass
        path.unlink()
        Path(str(path) + ".wal").unlink(missing_ok=True)
    started = time.perf_counter()
    rng = np.random.default_rng(11)
    with EmbeddedStore(path, create=True) as store:
        store.create_collection("products")
        for start in range(0, n, BLOCK):
            stop = min(n, start + BLOCK)
            rows = stop - start
            store.upsert_table("products", pa.table({
                "_key": key_array(start, stop),
                "category": pa.array(np.array(CATEGORIES)[rng.integers(0, len(CATEGORIES), rows)]),
                "price": pa.array(np.round(rng.uniform(0, 100, rows), 2)),
                "title": pa.array([f"Product {i}" for i in range(start, stop)]),
                "features": _fixed_lists(rng.standard_normal((rows, 100), dtype=np.float32)),
            }), checked=True)
            log(f"restored {stop:,} / {n:,} ({time.perf_counter() - started:.0f} s)")
        for start in range(0, n, BLOCK):
            stop = min(n, start + BLOCK)
            rows = stop - start
            store.update_attributes("products", pa.table({
                "_key": key_array(start, stop),
                "embedding": _fixed_lists(rng.standard_normal((rows, 256), dtype=np.float32)),
                "similar": _similar(rng, start, stop, n),
                "predicted_category": pa.array(rng.integers(0, len(CATEGORIES), rows)),
            }))
            log(f"written back {stop:,} / {n:,} ({time.perf_counter() - started:.0f} s)")
        store.put_state("bench:key_lookup", {"docs": n, "complete": True})
    log(f"built {path} in {time.perf_counter() - started:.0f} s, {path.stat().st_size / 2**30:.2f} GiB")
    return path


REPO = Path(__file__).resolve().parents[1]
FIELDS = "category,price,title"


def random_keys(rng: np.random.Generator, n: int, count: int = 10) -> list[str]:
    return [f"P{i:07d}" for i in rng.integers(0, n, count)]


def percentiles(seconds: list[float]) -> dict:
    if not seconds:
        return {"count": 0}
    ms = 1e3 * np.asarray(seconds)
    return {"count": len(ms), "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2), "max_ms": round(float(ms.max()), 2)}


def ensure_key_index(path: Path) -> float:
    """Opening the store to write gives stores built before the key index theirs."""
    started = time.perf_counter()
    EmbeddedStore(path, create=False).close()
    return round(time.perf_counter() - started, 2)


def _without_key_index(store: EmbeddedStore) -> EmbeddedStore:
    """The baseline: the same query with index scans switched off scans as it did before
    the store had a key index."""
    store._db.execute("SET index_scan_max_count = 0")
    store._db.execute("SET index_scan_percentage = 0")
    return store


def store_direct(path: Path, n: int, requests: int) -> dict:
    rng = np.random.default_rng(5)
    out = {}
    with EmbeddedStore(path, create=False, read_only=True) as before, \
            EmbeddedStore(path, create=False, read_only=True) as after:
        _without_key_index(before)
        for name, store in (("no key index, connection held", before), ("key index, connection held", after)):
            store.get_documents("products", random_keys(rng, n))  # warm
            times = []
            for _ in range(requests if store is after else max(20, requests // 10)):
                keys = random_keys(rng, n)
                started = time.perf_counter()
                store.get_documents("products", keys)
                times.append(time.perf_counter() - started)
            out[name] = percentiles(times)
            log(f"store direct, {name}: {out[name]}")
        times = []
        for _ in range(requests):
            keys = random_keys(rng, n)
            started = time.perf_counter()
            after.get_documents("products", keys, attributes=FIELDS.split(","))
            times.append(time.perf_counter() - started)
        out[f"key index, connection held, attributes={FIELDS}"] = percentiles(times)
        log(f"store direct, attributes: {percentiles(times)}")
        keys = random_keys(rng, n)
        assert before.get_documents("products", keys) == after.get_documents("products", keys), "results differ"
    for name, scans in (("no key index, opened per lookup", False), ("key index, opened per lookup", True)):
        times = []
        for _ in range(20):
            keys = random_keys(rng, n)
            started = time.perf_counter()
            with EmbeddedStore(path, create=False, read_only=True) as store:
                if not scans:
                    _without_key_index(store)
                store.get_documents("products", keys)
            times.append(time.perf_counter() - started)
        out[name] = percentiles(times)
        log(f"store direct, {name}: {out[name]}")
    return out


def build_index(root: Path, n: int) -> Path:
    """A small IVF index over all keys (8-d random vectors, nprobe 1): a similarity query
    then costs well under a millisecond, so what the requests measure is the store."""
    from graphsvc.index.artifacts import current_version, load_version, publish
    from graphsvc.index.faiss_index import VectorIndex

    index_dir = root / f"key_lookup_index_{n}"
    if current_version(index_dir, "products"):
        if load_version(
            index_dir, "products", current_version(index_dir, "products"), verify=False
        ).manifest.count == n:
            return index_dir
    vectors = np.random.default_rng(2).standard_normal((n, 8), dtype=np.float32)
    index = VectorIndex.build(vectors, metric="cosine", kind="ivf", nlist=1024, nprobe=1)
    publish(index_dir, "products", index, key_array(0, n), {"name": "bench-synthetic", "version": "1"})
    return index_dir


class Service:
    def __init__(self, repo: Path, index_dir: Path, store: Path, port: int):
        args = [sys.executable, "-m", "graphsvc.cli", "--index-dir", str(index_dir), "--store", str(store),
                "serve", "--port", str(port), "--workers", "1", "--request-timeout", "30", "--collection", "products"]
        self.base = f"http://127.0.0.1:{port}"
        self.log = tempfile.TemporaryFile(mode="w+")
        env = {**os.environ, "PYTHONPATH": str(repo)}
        self.process = subprocess.Popen(args, cwd=repo, env=env, stdout=self.log, stderr=subprocess.STDOUT, text=True)
        import httpx

        started = time.monotonic()
        while time.monotonic() - started < 600:
            if self.process.poll() is not None:
                self.log.seek(0)
                raise SystemExit(f"graphsvc serve exited: {self.log.read()[-3000:]}")
            try:
                if httpx.get(self.base + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise SystemExit("graphsvc serve did not become ready")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def http_requests(client, n: int, count: int, fields: bool, rng) -> dict:
    times, statuses = [], {}
    for _ in range(count):
        key = f"P{rng.integers(n):07d}"
        started = time.perf_counter()
        response = client.get(f"/v1/products/{key}/similar", params={"k": 10, **({"fields": FIELDS} if fields else {})})
        times.append(time.perf_counter() - started)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        if fields and response.status_code == 200:
            hit = response.json()["hits"][0]
            assert hit.get("category") and hit.get("title"), hit
    return {**percentiles(times), "statuses": statuses}


WRITER = r"""
import sys, time, numpy as np, pyarrow as pa
sys.path.insert(0, sys.argv[3])
from graphsvc.store.embedded import EmbeddedStore
path, rows = sys.argv[1], int(sys.argv[2])
asked = time.time()
store = EmbeddedStore(path, create=False)
opened = time.time()
keys = pa.array([f"P{i:07d}" for i in range(rows)])
categories = pa.array(np.random.default_rng(1).integers(0, 47, rows))
store.update_attributes("products", pa.table({"_key": keys, "predicted_category": categories}))
written = time.time()
store.close()
print(asked, opened, written, time.time())
"""


def during_write(base: str, store: Path, n: int, rows: int) -> dict:
    import httpx

    rng = np.random.default_rng(9)
    records = []  # (wall time, status, seconds)
    with httpx.Client(base_url=base, timeout=60) as client:
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(store), str(rows), str(REPO)],
                                  stdout=subprocess.PIPE, text=True)
        while writer.poll() is None or (records and time.time() - records[-1][0] < 0):
            key = f"P{rng.integers(n):07d}"
            started = time.perf_counter()
            at = time.time()
            response = client.get(f"/v1/products/{key}/similar", params={"k": 10, "fields": FIELDS})
            records.append((at, response.status_code, time.perf_counter() - started))
        asked, opened, written, closed = (float(x) for x in writer.communicate()[0].split())
        if writer.returncode:
            raise SystemExit("the writer failed")
        back = None
        for _ in range(2000):  # until fields are answered again
            at = time.time()
            started = time.perf_counter()
            response = client.get(f"/v1/products/P{rng.integers(n):07d}/similar", params={"k": 10, "fields": FIELDS})
            records.append((at, response.status_code, time.perf_counter() - started))
            if response.status_code == 200:
                back = at - closed
                break
        for _ in range(200):  # and a while after
            at = time.time()
            started = time.perf_counter()
            response = client.get(f"/v1/products/P{rng.integers(n):07d}/similar", params={"k": 10, "fields": FIELDS})
            records.append((at, response.status_code, time.perf_counter() - started))
    statuses = {}
    for _, status, _s in records:
        statuses[status] = statuses.get(status, 0) + 1
    return {
        "rows_written": rows, "writer_waited_for_the_service_s": round(opened - asked, 3),
        "writer_held_the_file_s": round(closed - opened, 2), "statuses": statuses,
        "all_answers": percentiles([s for _, _, s in records]),
        "200_answers": percentiles([s for _, status, s in records if status == 200]),
        "503_answers": percentiles([s for _, status, s in records if status == 503]),
        "200_answers_while_the_writer_held_the_file": sum(
            1 for at, st, _ in records if opened <= at <= closed and st == 200
        ),
        "fields_back_after_the_writer_closed_s": None if back is None else round(back, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=2_449_029)
    parser.add_argument("--cache", type=Path, default=Path("/work/scale"))
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--write-rows", type=int, default=500_000)
    parser.add_argument("--main", type=Path, default=Path("/work/main"), help="a checkout whose 'main' is the baseline")
    parser.add_argument("--port", type=int, default=18391)
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    path = build_store(args.cache / f"key_lookup_{args.docs}.duckdb", args.docs)
    if args.build_only:
        return
    summary = {"docs": args.docs, "key_index_created_or_checked_s": ensure_key_index(path)}
    summary["store_direct"] = store_direct(path, args.docs, args.requests)
    index_dir = build_index(args.cache, args.docs)
    import httpx

    summary["http"] = {}
    for name, repo in (("main (file opened per request)", args.main), ("this branch (connection held)", REPO)):
        service = Service(repo, index_dir, path, args.port)
        try:
            rng = np.random.default_rng(4)
            with httpx.Client(base_url=service.base, timeout=60) as client:
                http_requests(client, args.docs, 5, True, rng)  # warm
                count = args.requests if repo == REPO else max(50, args.requests // 4)
                summary["http"][name] = {"no fields": http_requests(client, args.docs, count, False, rng),
                                         f"fields={FIELDS}": http_requests(client, args.docs, count, True, rng)}
            log(f"http, {name}: {summary['http'][name]}")
            if repo == REPO:
                summary["during_write"] = during_write(service.base, path, args.docs, args.write_rows)
                log(f"during a write: {summary['during_write']}")
        finally:
            service.stop()
    summary["load_average"] = os.getloadavg()
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
