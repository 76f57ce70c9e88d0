"""Graph-aware movie embedding vs text-only, through Triton and in-process, in one run.

    .venv/bin/python bench/movies_graph.py [--movies N] [--runs R] [--json]

1. set-up (temp dir): a generated catalogue with people (`jobs synth movies --movies N`)
   → fresh embedded store → the sentence encoder and the shipped graph-aware model
   (checkpoints/movie_graph.pth.tar) exported → a real tritonserver on free ports;
2. the job as it is, `jobs.embed_movies`, `--model text` and `--model graph` (each run R
   times, the best reported: the first includes warm-up): movies/s of the whole job and
   of its phases (texts through the sentence encoder, graph layers);
3. in-process references on the same texts and graph: the sentence encoder in torch, and
   the graph layers in torch (`graphsvc.inference.relational.embed_movies_in_process`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from graphsvc.graph.datasets import load_memberships, load_texts
from graphsvc.graph.relations import MovieRelations
from graphsvc.inference.relational import embed_movies_in_process
from graphsvc.inference.texts import encode_texts_in_process
from graphsvc.models.movie_graph import load_movie_checkpoint
from graphsvc.store import open_store
from graphsvc.triton.client import TritonClient
from graphsvc.triton.process import TritonServer
from jobs.embed_movies import EmbedMoviesConfig, embed_movies
from jobs.export_models import DEFAULT_MOVIE_CHECKPOINT, export_movie_graph, export_sentence_encoder
from jobs.restore_dumps import restore_dumps
from jobs.synth_movies import MovieCatalogueSpec, write_movie_catalogue_dump

REPO_ROOT = Path(__file__).resolve().parent.parent
_started = time.perf_counter()


def say(message: str) -> None:
    print(f"[{time.perf_counter() - _started:6.1f}s] {message}", file=sys.stderr, flush=True)


def free_ports(count: int) -> list[int]:
    import socket

    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def rate(items: int, seconds: float) -> float:
    return round(items / seconds, 1) if seconds > 0 else float("nan")


def best_jobs(store, triton, index_dir: Path, runs: int) -> dict[str, dict]:
    """The fastest of `runs` runs of the job, text-only and graph-aware taking turns (so a
    busy spell on this shared machine slows both alike), by total seconds."""
    best: dict[str, dict] = {}
    for _ in range(runs):
        for embedding in ("text", "graph"):
            say(f"{embedding} job")
            summary = embed_movies(store, triton, index_dir, EmbedMoviesConfig(embedding=embedding))
            assert summary["embedding"] == embedding, summary["embedding"]
            if embedding not in best or summary["seconds"]["total"] < best[embedding]["seconds"]["total"]:
                best[embedding] = summary
    return best


def in_process(store, runs: int) -> dict:
    keys, texts, _ = load_texts(store, "movies", "description", "title")
    model, _ = load_movie_checkpoint(REPO_ROOT / DEFAULT_MOVIE_CHECKPOINT)
    text_seconds, graph_seconds, relation_seconds = [], [], []
    for _ in range(runs):
        started = time.perf_counter()
        vectors = encode_texts_in_process(texts)
        text_seconds.append(time.perf_counter() - started)
        started = time.perf_counter()
        relations = MovieRelations.build(model.relations, load_memberships(store, "movies", keys, model.relations),
                                         len(keys))
        relation_seconds.append(time.perf_counter() - started)
        started = time.perf_counter()
        embed_movies_in_process(model, relations, vectors)
        graph_seconds.append(time.perf_counter() - started)
    return {"texts_s": min(text_seconds), "relations_s": min(relation_seconds), "graph_layers_s": min(graph_seconds)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--movies", type=int, default=2000, help="movies in the generated catalogue")
    parser.add_argument("--runs", type=int, default=2, help="runs of each measurement (the best is reported)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="graphsvc-bench-movies-") as tmp, contextlib.ExitStack() as cleanup:
        work = Path(tmp)
        say(f"set-up in {work}: a {args.movies}-movie catalogue, models, Triton")
        write_movie_catalogue_dump(work / "dump", MovieCatalogueSpec(movies=args.movies, seed=1))
        store = cleanup.enter_context(open_store(str(work / "bench.duckdb"), create=True))
        restore_dumps(store, [work / "dump"])
        export_sentence_encoder(work / "repository")
        layers = [m.name for m in export_movie_graph(work / "repository", REPO_ROOT / DEFAULT_MOVIE_CHECKPOINT)]
        http, grpc, metrics = free_ports(3)
        server = TritonServer(work / "repository", http_port=http, grpc_port=grpc, metrics_port=metrics)
        cleanup.callback(server.stop)
        server.start()
        server.wait_ready(timeout=300)
        with TritonClient(server.grpc_url) as triton:
            triton.wait_ready(timeout=300, models=["sentence_encoder", *layers])
            jobs = best_jobs(store, triton, work / "indexes", args.runs)
            text_job, graph_job = jobs["text"], jobs["graph"]
        server.stop()  # off the 2 cores before the in-process runs
        say("in-process references")
        local = in_process(store, args.runs)

    n = args.movies
    graph_layers_triton = graph_job["seconds"]["graph"]
    report = {
        "movies": n,
        "links": graph_job["graph"]["relations"],
        "cpus": os.cpu_count(),
        "load_average_1min": {"start": round(load_before, 2), "end": round(os.getloadavg()[0], 2)},
        "movies_per_s": {
            "text-only job (Triton)": rate(n, text_job["seconds"]["total"]),
            "graph-aware job (Triton)": rate(n, graph_job["seconds"]["total"]),
            "texts through Triton (sentence encoder)": rate(n, text_job["seconds"]["embed"]),
            "graph layers through Triton (incl. relation means)": rate(n, graph_layers_triton),
            "texts in-process (torch)": rate(n, local["texts_s"]),
            "graph layers in-process (torch)": rate(n, local["graph_layers_s"]),
        },
        "seconds": {"text_job": text_job["seconds"], "graph_job": graph_job["seconds"],
                    "in_process": {k: round(v, 3) for k, v in local.items()}},
    }
    figures = report["movies_per_s"]
    report["ratios"] = {
        "graph-aware job / text-only job": round(figures["graph-aware job (Triton)"]
                                                 / figures["text-only job (Triton)"], 2),
        "graph layers: Triton / in-process": round(figures["graph layers through Triton (incl. relation means)"]
                                                   / figures["graph layers in-process (torch)"], 2),
        "texts: Triton / in-process": round(figures["texts through Triton (sentence encoder)"]
                                            / figures["texts in-process (torch)"], 2),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{n} movies, links {report['links']}, {report['cpus']} CPUs, load "
          f"{report['load_average_1min']['start']} → {report['load_average_1min']['end']}")
    for name, value in figures.items():
        print(f"  {name:<55} {value:>10,.1f} movies/s")
    for name, value in report["ratios"].items():
        print(f"  {name:<55} {value:>10.2f} ×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
