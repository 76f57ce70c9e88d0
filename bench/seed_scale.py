"""The whole pipeline at the workshop's size, one command, one table.

    .venv/bin/python bench/seed_scale.py                      # ogbn-products: 2,449,029 products, 61,859,140 edges
    .venv/bin/python bench/seed_scale.py --nodes 200000 --edges 5000000 --work /tmp/seed200k
    .venv/bin/python bench/seed_scale.py --checkpoint PATH    # embed with a checkpoint you have (no training)

Every step is the real command a user runs (`jobs synth`, `jobs restore-dumps`, `jobs
export-models`, `graphsvc triton serve`, `jobs embed-products`, `graphsvc serve`, `jobs
reindex`, `jobs evaluate`), each in its own process, so each step's peak RSS is its own
(read with wait4). The table gives per step seconds, rows/s and peak RSS, and the
in-run baselines:

- recall@10 of the written-back `similar` lists against exact search (brute force in
  this process) on 1,000 sampled products;
- the per-query top-10 pass as embed-products ran it before the kNN-graph pass (one IVF
  query per product at the published index's calibrated nprobe), timed on a sample of
  rows and extrapolated to every product, with its recall on the same 1,000 products.

The embedding model is trained on the catalogue first (`jobs train-graphsage
--split-attribute split --batch-size 1024`, `--train-epochs`, timed but outside the
restore → embed → first query total), so the embeddings cluster as a trained model's do.
`--checkpoint PATH` embeds with a given checkpoint instead; `--train-epochs 0` with the
workshop's checkpoint (`../shared/fixtures/checkpoints/…`: fitted to ogbn-products' real
features, so on this catalogue its vectors hardly cluster, the worst case for the top-10
pass), else with a seeded untrained GraphSAGE.
The catalogue, the store and the Triton repository are kept in --work; a rerun with the
same sizes reuses the dump (`--fresh` starts over).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

OGBN_PRODUCTS = (2_449_029, 61_859_140)
WORKSHOP_CHECKPOINT = (
    REPO.parent / "shared" / "fixtures" / "checkpoints" / "obgn-products_cpu_weights_checkpoint.pth.tar"
)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Step:
    name: str
    seconds: float
    rows: int | None = None
    peak_rss_mb: float | None = None
    note: str = ""
    in_total: bool = True  # counts towards restore → embed → first query

    def row(self) -> list[str]:
        rate = f"{self.rows / self.seconds:,.0f}" if self.rows and self.seconds > 0 else ""
        rss = f"{self.peak_rss_mb:,.0f}" if self.peak_rss_mb is not None else ""
        return [self.name, f"{self.seconds:,.1f}", f"{self.rows:,}" if self.rows is not None else "", rate, rss,
                self.note]


class StepFailed(Exception):
    """A step's command failed; the table still shows it, with its seconds and peak RSS."""


@dataclass
class Pipeline:
    work: Path
    nodes: int
    edges: int
    python: str = sys.executable
    env: dict = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    figures: dict = field(default_factory=dict)  # the in-run baselines and checks, for --json

    def command(self, name: str, args: list[str], rows: int | None = None, note: str = "", in_total: bool = True,
                parse_json: bool = False) -> tuple[Step, dict | None]:
        """Run one step as its own process; its peak RSS from wait4, stdout parsed as JSON when asked."""
        say(f"== {name}: {' '.join(args)}")
        started = time.perf_counter()
        out_path = self.work / f"{name}.out"
        with open(out_path, "wb") as out, open(self.work / f"{name}.err", "wb") as err:
            process = subprocess.Popen([self.python, *args], stdout=out, stderr=err, env=self.env, cwd=REPO)
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        step = Step(name, seconds, rows, usage.ru_maxrss / 1024, note, in_total)
        self.steps.append(step)
        if process.returncode != 0:
            tail = (self.work / f"{name}.err").read_text(errors="replace").strip().splitlines()[-3:]
            why = "killed (out of memory?)" if process.returncode == -9 else f"exit {process.returncode}"
            step.note, step.rows = f"FAILED: {why} {' | '.join(tail)}"[:200], None
            raise StepFailed(f"step {name} failed: {why}: {' | '.join(tail)}")
        summary = json.loads(out_path.read_text()) if parse_json else None
        say(f"   {seconds:.1f}s, peak RSS {step.peak_rss_mb:,.0f} MB")
        return step, summary

    def background(self, name: str, args: list[str]) -> subprocess.Popen:
        err = open(self.work / f"{name}.err", "wb")
        return subprocess.Popen([self.python, *args], stdout=err, stderr=err, env=self.env, cwd=REPO,
                                start_new_session=True)


def stop(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{what} not ready at {url} after {timeout:.0f}s")


def query_latency(base: str, keys: list[str], fields: str, rounds: int) -> dict:
    """Sequential `GET …/similar?k=10&fields=…` from one client: p50/p99 in ms."""
    seconds = []
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(rounds):
        key = keys[int(rng.integers(len(keys)))]
        started = time.perf_counter()
        with urllib.request.urlopen(f"{base}/v1/products/{key}/similar?k=10&fields={fields}", timeout=30) as r:
            body = json.loads(r.read())
        seconds.append(time.perf_counter() - started)
        hits += sum(1 for hit in body["hits"] if all(f in hit for f in fields.split(",")))
    ms = np.array(seconds[min(20, rounds // 10):]) * 1000  # the first requests open files and warm caches
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "requests": rounds, "hits_with_fields": hits}


def exact_top10(vectors: np.ndarray, rows: np.ndarray, chunk: int = 131_072) -> np.ndarray:
    """Brute-force top-10 ids of `rows` (self excluded), over the vectors in chunks (bounded memory)."""
    queries = vectors[rows]
    best_scores = np.full((len(rows), 10), -np.inf, np.float32)
    best_ids = np.full((len(rows), 10), -1, np.int64)
    for start in range(0, len(vectors), chunk):
        scores = queries @ vectors[start:start + chunk].T
        own = (rows >= start) & (rows < start + chunk)
        scores[np.flatnonzero(own), rows[own] - start] = -np.inf
        ids = np.broadcast_to(np.arange(start, start + scores.shape[1]), scores.shape)
        both_scores = np.concatenate([best_scores, scores], axis=1)
        both_ids = np.concatenate([best_ids, ids], axis=1)
        top = np.argpartition(-both_scores, 9, axis=1)[:, :10]
        best_scores = np.take_along_axis(both_scores, top, axis=1)
        best_ids = np.take_along_axis(both_ids, top, axis=1)
    return best_ids


def recall_check(index_dir: Path, store_path: Path, sample: int, per_query_sample: int, seed: int = 0) -> dict:
    """Recall@10 of the written-back `similar` lists and of the old per-query pass, both
    against exact search in this process on `sample` products; the per-query pass timed on
    `per_query_sample` rows and extrapolated."""
    from graphsvc.index.artifacts import current_version, load_version
    from graphsvc.store.embedded import EmbeddedStore

    loaded = load_version(index_dir, "products", current_version(index_dir, "products"), verify=False)
    index = loaded.index
    n = index.count
    vectors = index.vectors(np.arange(n))  # unit vectors (cosine)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    exact = exact_top10(vectors, rows)
    keys = loaded.keys
    store = EmbeddedStore(store_path, create=False, read_only=True)
    try:
        documents = store.get_documents("products", [keys[int(r)].as_py() for r in rows])
    finally:
        store.close()
    # key sets per sampled row against the keys of its `similar` list
    truth_keys = [set(keys.take(exact[i]).to_pylist()) for i in range(len(rows))]
    found = sum(len(truth_keys[i] & {e["_key"] for e in (documents[i] or {}).get("similar", [])[:10]})
                for i in range(len(rows)))
    similar_recall = found / (10 * len(rows))

    # the per-query pass embed-products used before: one IVF query per product (k+1, self dropped)
    timed = np.sort(rng.choice(n, size=min(per_query_sample, n), replace=False))
    started = time.perf_counter()
    for start in range(0, len(timed), 4096):
        index._raw_search(vectors[timed[start:start + 4096]], 11)
    per_query_seconds = (time.perf_counter() - started) * n / len(timed)
    _, ids = index._raw_search(vectors[rows], 11)
    per_query_found = sum(len(set(exact[i]) & set(ids[i][ids[i] != rows[i]][:10])) for i in range(len(rows)))
    return {
        "similar_recall_at_10": round(similar_recall, 4),
        "per_query_pass_seconds_extrapolated": round(per_query_seconds, 1),
        "per_query_pass_recall_at_10": round(per_query_found / (10 * len(rows)), 4),
        "per_query_sample": len(timed),
        "index": index.kind,
        "nprobe": index.nprobe,
    }


def change_features(store_path: Path, share: float, seed: int = 3) -> int:
    """Perturb the features of `share` of the products, as a night's catalogue changes would."""
    import pyarrow as pa

    from graphsvc.index.similar import embedding_array
    from graphsvc.store.embedded import EmbeddedStore

    store = EmbeddedStore(store_path, create=False)
    try:
        keys = store.select_keys("products")
        rng = np.random.default_rng(seed)
        chosen = sorted(rng.choice(len(keys), size=max(1, int(len(keys) * share)), replace=False))
        changed_keys = [keys[i] for i in chosen]
        documents = store.get_documents("products", changed_keys)
        features = np.array([d["features"] for d in documents], np.float32)
        features += rng.normal(scale=0.5, size=features.shape).astype(np.float32)
        store.update_attributes("products", pa.table({"_key": pa.array(changed_keys, pa.string()),
                                                      "features": embedding_array(features)}))
    finally:
        store.close()
    return len(changed_keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=OGBN_PRODUCTS[0])
    parser.add_argument("--edges", type=int, default=OGBN_PRODUCTS[1])
    parser.add_argument("--work", type=Path, default=REPO / "var" / "seed_scale")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="GraphSAGE checkpoint to embed with (no training) [default: train one on the catalogue].")
    parser.add_argument("--train-epochs", type=int, default=1,
                        help="Epochs of `jobs train-graphsage` (timed, excluded from the total); 0: embed with the "
                             "workshop's checkpoint (its weights fit ogbn-products' features, not these), "
                             "else untrained.")
    parser.add_argument("--queries", type=int, default=500, help="Sequential fields= queries through graphsvc serve.")
    parser.add_argument("--skip-reindex", action="store_true")
    parser.add_argument("--skip-evaluate", action="store_true")
    parser.add_argument("--fresh", action="store_true", help="Regenerate the catalogue too.")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    work = args.work.resolve()
    if args.fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    for stale in ("store.duckdb", "store.duckdb.wal", "indexes", "models", "evaluation"):
        path = work / stale
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)

    http, grpc, metrics, service_port = free_port(), free_port(), free_port(), free_port()
    env = {**os.environ, "GRAPHSVC_STORE": str(work / "store.duckdb"), "GRAPHSVC_INDEX_DIR": str(work / "indexes"),
           "GRAPHSVC_MODEL_REPOSITORY": str(work / "models"), "GRAPHSVC_TRITON_URL": f"grpc://127.0.0.1:{grpc}",
           "PYTHONUNBUFFERED": "1"}
    pipeline = Pipeline(work, args.nodes, args.edges, env=env)
    failed = None
    try:
        run(pipeline, args, work, (http, grpc, metrics, service_port))
    except StepFailed as failure:
        failed = failure
    report(pipeline, args, work)
    if failed:
        raise SystemExit(str(failed))


def run(pipeline: "Pipeline", args, work: Path, ports: tuple[int, int, int, int]) -> None:
    """Every step in order; a failed step of the main path stops it (StepFailed)."""
    http, grpc, metrics, service_port = ports
    jobs, graphsvc = ["-m", "jobs.cli"], ["-m", "graphsvc.cli"]
    dump, marker = work / "dump", work / "dump.size"

    if marker.exists() and marker.read_text() == f"{args.nodes} {args.edges}" and dump.is_dir():
        say(f"== synth: reusing {dump}")
    else:
        pipeline.command("synth", [*jobs, "synth", "products", "--nodes", str(args.nodes), "--edges", str(args.edges),
                                   "--out", str(dump)], rows=args.edges, note="edges written", in_total=False)
        marker.write_text(f"{args.nodes} {args.edges}")

    _, restored = pipeline.command("restore-dumps", [*jobs, "restore-dumps", str(dump), "--json"],
                                   rows=args.nodes + args.edges, note="documents + edges", parse_json=True)
    pipeline.figures["restore"] = restored

    checkpoint = args.checkpoint
    if checkpoint is None and args.train_epochs:
        trained = work / "trained.pth.tar"
        step, trained_metrics = pipeline.command("train-graphsage",
                                                 [*jobs, "train-graphsage", "--split-attribute", "split",
                                                  "--batch-size", "1024", "--epochs", str(args.train_epochs),
                                                  "--out", str(trained), "--json"],
                                                 in_total=False, parse_json=True)
        pipeline.figures["train"] = trained_metrics
        train_nodes = (trained_metrics.get("split", {}).get("sizes", {}) or {}).get("train")
        step.rows = train_nodes * trained_metrics.get("epochs_run", 1) if train_nodes else None
        step.note = "accuracy " + " ".join(f"{k} {v}" for k, v in trained_metrics.get("accuracy", {}).items())
        checkpoint = trained
    if checkpoint is None:
        if WORKSHOP_CHECKPOINT.exists():
            checkpoint = WORKSHOP_CHECKPOINT
        else:
            import torch

            from graphsvc.models import graphsage

            torch.manual_seed(0)
            checkpoint = work / "untrained.pth.tar"
            graphsage.save_checkpoint(checkpoint, graphsage.GraphSAGE(100, 256, 47).eval(), epoch=0, best_acc=0.0)
    pipeline.command("export-models", [*jobs, "export-models", "--checkpoint", str(checkpoint), "--no-text"],
                     note=checkpoint.name)

    triton = service = None
    try:
        started = time.perf_counter()
        triton = pipeline.background("triton", [*graphsvc, "triton", "serve", "--http-port", str(http),
                                                "--grpc-port", str(grpc), "--metrics-port", str(metrics)])
        wait_http(f"http://127.0.0.1:{http}/v2/health/ready", 300, triton, "tritonserver")
        pipeline.steps.append(Step("triton ready", time.perf_counter() - started))

        step, summary = pipeline.command("embed-products", [*jobs, "embed-products", "--json"], rows=args.nodes,
                                         parse_json=True)
        phases = summary.get("seconds", {})
        step.note = ", ".join(f"{k} {v}" for k, v in phases.items() if k != "total")
        found = summary.get("similar") or {}
        step.note += f"; top-10 by {found.get('method')}, measured recall@10 {found.get('recall_at_k')}"

        started = time.perf_counter()
        recall = recall_check(work / "indexes", work / "store.duckdb", sample=1000, per_query_sample=20_000)
        pipeline.figures["embed_products"] = summary
        pipeline.figures["recall"] = recall
        pipeline.steps.append(Step("recall check (baselines)", time.perf_counter() - started, in_total=False,
                                   note=f"similar recall@10 {recall['similar_recall_at_10']}; per-query pass "
                                        f"{recall['per_query_pass_seconds_extrapolated']}s extrapolated, recall "
                                        f"{recall['per_query_pass_recall_at_10']} ({recall['index']}, nprobe "
                                        f"{recall['nprobe']})"))

        started = time.perf_counter()
        service = pipeline.background("serve", [*graphsvc, "serve", "--port", str(service_port)])
        base = f"http://127.0.0.1:{service_port}"
        wait_http(f"{base}/readyz", 300, service, "graphsvc serve")
        ready = time.perf_counter() - started
        keys = [f"P{i:07d}" for i in np.random.default_rng(2).choice(args.nodes, size=1000, replace=False)]
        latency = query_latency(base, keys, "category,title", args.queries)
        pipeline.figures["serve"] = latency
        pipeline.steps.append(Step("serve: ready + first query", ready, note="index loaded"))
        pipeline.steps.append(Step("serve: fields= queries", 0.0, rows=latency["requests"], in_total=False,
                                   note=f"p50 {latency['p50_ms']} ms, p99 {latency['p99_ms']} ms "
                                        "(10 hits, sequential)"))
        stop(service)
        service = None

        if not args.skip_reindex:
            reindex_steps(pipeline, args, jobs, work)
    finally:
        stop(service)
        stop(triton)

    if not args.skip_evaluate:
        try:
            step, summary = pipeline.command("evaluate", [*jobs, "evaluate", "--checkpoint", str(checkpoint),
                                                          "--out", str(work / "evaluation"), "--json"],
                                             in_total=False, parse_json=True)
            pipeline.figures["evaluate"] = summary
        except StepFailed as failure:
            say(str(failure))


def reindex_steps(pipeline: "Pipeline", args, jobs: list[str], work: Path) -> None:
    """The first reindex (a full one), 1 % of the products changed, the next (incremental)."""
    try:
        full, full_summary = pipeline.command("reindex (first: full)", [*jobs, "reindex", "products", "--json"],
                                              rows=args.nodes, in_total=False, parse_json=True)
        started = time.perf_counter()
        changed = change_features(work / "store.duckdb", 0.01)
        pipeline.steps.append(Step("change 1% of products", time.perf_counter() - started, rows=changed,
                                   in_total=False))
        night, night_summary = pipeline.command("reindex (1% changed)", [*jobs, "reindex", "products", "--json"],
                                                rows=changed, in_total=False, parse_json=True)
        night.note = f"{night.seconds / full.seconds:.1%} of the full reindex run"
        pipeline.figures["reindex"] = {"full": full_summary, "night": night_summary, "changed": changed,
                                       "ratio": round(night.seconds / full.seconds, 4)}
    except StepFailed as failure:
        say(str(failure))


def report(pipeline: "Pipeline", args, work: Path) -> None:
    total = sum(s.seconds for s in pipeline.steps if s.in_total)
    header = ["step", "seconds", "rows", "rows/s", "peak RSS MB", "note"]
    rows = [s.row() for s in pipeline.steps]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    table = sys.stderr if args.json else sys.stdout  # --json: only the JSON on stdout
    print(f"\nseed scale: {args.nodes:,} products, {args.edges:,} co-purchases ({work})", file=table)
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
              + "  " + r[-1], file=table)
    print(f"restore → embed → first query: {total:,.1f} s ({total / 60:.1f} min; goal ≤ 30 min)",
          file=table)
    if args.json:
        print(json.dumps({"nodes": args.nodes, "edges": args.edges, "total_seconds": round(total, 1),
                          "steps": [s.__dict__ for s in pipeline.steps], **pipeline.figures}, indent=1, default=str))


if __name__ == "__main__":
    main()
