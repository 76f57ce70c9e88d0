"""`jobs recommend-users` throughput: users/s of the job with the user tower on Triton
against the same job with the tower in this process, both measured in this run on the
same store.

    .venv/bin/python bench/recommend_users.py [--users 20000] [--movies 2000] [--ratings 50] [--json]

- Triton: `jobs.recommend_users.recommend_users` as it is (batches of `--batch-size`
  users, each their latest 100 ratings, 2 requests in flight), `full` so that every user
  is computed; `--repeats` runs, each rate the best of them;
- in-process: the same job with the tower called in this process (`in_process`), same
  batches, same checkpoint.

Reported: users/s of the embedding phase (user vectors) and of the whole job (pull,
vectors, top-k unrated by blocked products, write-back, publish), and Triton's ratio to
in-process. The tower is seeded and untrained (dim 32): throughput does not depend on
training. The rating graph is generated: movies with Pareto popularity, each user
`--ratings` ratings on average.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphsvc.models.user_tower import TowerCheckpoint, TowerSettings, UserTower, in_process  # noqa: E402
from graphsvc.store import open_store  # noqa: E402
from graphsvc.triton.client import TritonClient  # noqa: E402
from graphsvc.triton.process import TritonServer  # noqa: E402
from jobs.export_models import export_user_tower  # noqa: E402
from jobs.recommend_users import RecommendUsersConfig, recommend_users, recommend_with  # noqa: E402
from tests.support import free_ports  # noqa: E402


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build(work: Path, users: int, movies: int, per_user: float, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    counts = np.clip(rng.poisson(per_user, users), 1, movies)
    weight = rng.pareto(1.5, movies) + 0.1
    p = weight / weight.sum()
    from_users, to_movies = [], []
    for u, count in enumerate(counts):
        to_movies.append(rng.choice(movies, size=count, replace=False, p=p))
        from_users.append(np.full(count, u))
    src, dst = np.concatenate(from_users), np.concatenate(to_movies)
    n = len(src)
    path = work / "store.duckdb"
    with open_store(str(path), create=True) as store:
        store.create_collection("Users")
        store.create_collection("movies")
        store.create_collection("Ratings", "edge")
        store.upsert_table("Users", pa.table({"_key": pa.array([f"u{u}" for u in range(users)])}))
        store.upsert_table("movies", pa.table({"_key": pa.array([f"m{m}" for m in range(movies)])}))
        store.upsert_table("Ratings", pa.table({
            "_key": pa.array([f"r{i}" for i in range(n)]),
            "_from": pa.array([f"Users/u{u}" for u in src]), "_to": pa.array([f"movies/m{m}" for m in dst]),
            "rating": pa.array(rng.integers(1, 6, n)), "timestamp": pa.array(rng.integers(0, 10**9, n)),
        }))
    say(f"store: {users:,} users, {movies:,} movies, {n:,} ratings")
    return path


def checkpoint(work: Path, store_path: Path) -> Path:
    from graphsvc.recommend.ratings import load_ratings

    with open_store(str(store_path)) as store:
        histories = load_ratings(store)
    torch.manual_seed(0)
    return TowerCheckpoint(UserTower(histories.num_movies, 32).eval(), TowerSettings(), histories.movie_keys,
                           histories.movie_collection, torch.from_numpy(histories.popularity()), {}
                           ).save(work / "user_tower.pt")


def best_of(repeats: int, run) -> list[dict]:
    """Every run's summary (the rates reported are each the best of them: on a shared
    machine a run's phases are slowed by whatever else runs then)."""
    return [run() for _ in range(repeats)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--movies", type=int, default=2_000)
    parser.add_argument("--ratings", type=float, default=50.0, help="Mean ratings per user.")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        store_path = build(work, args.users, args.movies, args.ratings)
        tower_path = checkpoint(work, store_path)
        export_user_tower(work / "repository", tower_path)
        config = RecommendUsersConfig(checkpoint=tower_path, batch_size=args.batch_size, full=True)
        http, grpc, metrics = free_ports(3)
        with TritonServer(work / "repository", http_port=http, grpc_port=grpc, metrics_port=metrics,
                          runtime_dir=work / "runtime") as server, TritonClient(server.grpc_url) as client:
            client.wait_ready(timeout=180, models=["user_tower"])

            def on_triton():
                with open_store(str(store_path)) as store:
                    return recommend_users(store, client, work / "triton", config)

            def here():
                from graphsvc.models.user_tower import load_tower

                with open_store(str(store_path)) as store:
                    return recommend_with(store, in_process(load_tower(tower_path).model), work / "local", config,
                                          {"name": "user_tower", "version": "in-process"})

            started = time.perf_counter()
            triton = best_of(args.repeats, on_triton)
            local = best_of(args.repeats, here)
            say(f"measured in {time.perf_counter() - started:.1f}s")

    def rates(summaries: list[dict]) -> dict:
        return {"embed_users_per_second": round(max(s["embedded_users"] / s["seconds"]["embed"] for s in summaries), 1),
                "job_users_per_second": round(max(s["num_users"] / s["seconds"]["total"] for s in summaries), 1),
                "seconds": min((s["seconds"] for s in summaries), key=lambda seconds: seconds["total"])}

    report = {"users": args.users, "movies": args.movies, "mean_ratings": args.ratings, "batch_size": args.batch_size,
              "triton": rates(triton), "in_process": rates(local)}
    report["ratio_embed"] = round(report["triton"]["embed_users_per_second"]
                                  / report["in_process"]["embed_users_per_second"], 3)
    report["ratio_job"] = round(report["triton"]["job_users_per_second"] / report["in_process"]["job_users_per_second"],
                                3)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for name in ("triton", "in_process"):
        row = report[name]
        print(f"{name:<10} vectors {row['embed_users_per_second']:>10,.0f} users/s   whole job "
              f"{row['job_users_per_second']:>9,.0f} users/s   phases {row['seconds']}")
    print(f"Triton / in-process: vectors {report['ratio_embed']:.2f}×, whole job {report['ratio_job']:.2f}×")


if __name__ == "__main__":
    main()
