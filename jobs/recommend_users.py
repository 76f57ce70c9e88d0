"""`jobs recommend-users`: ratings → user vectors on Triton → each user's top k unrated
movies → write back `recommended` → publish the recommendations artifact.

Recipe: pull the users and their ratings (time order) from the store → keep the ratings
of movies the trained tower knows (its checkpoint holds the movie list, the movie
vectors and their popularity) → hash each user's model input (their latest `history`
ratings) and compare with the last published artifact: only users whose input changed —
or all of them, when the model, k or the checkpoint changed, or with `full` — are
computed → their vectors from the `user_tower` model on Triton, in batches, journaled →
their top k unrated movies (blocked products against every movie vector, rated ones
masked) → write back `recommended` and `recommended_source` on those users only →
publish `<users>.recommendations` (movie index, per-user vectors/rated/hashes/lists,
popularity), carrying the unchanged users over from the last version. An unchanged user
whose document lost its `recommended` list (replaced since, e.g. by restoring the dump
again) gets the last version's list written back again, without Triton.

Users with no rating the model knows get the most popular movies, marked
`recommended_source: "popular"` (never an error). Crash safety: finished batches are in
the run's journal (a rerun computes only the missing ones); the artifact is published
atomically after the write-back, so a run killed between the two redoes the same users'
write-back (idempotent) on its rerun. One run at a time per artifact: the whole recipe
holds `<index_dir>/.jobs/<users>.recommendations/LOCK` (`graphsvc.runs.RunLock`), whichever
command runs it (`jobs recommend-users`, `jobs reindex users`); a held lock raises
LockHeld (exit 75). `plan_recommendations` is the dry run: the same diff, no Triton.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from graphsvc.errors import ConfigError, IndexNotFound, ModelRepositoryError
from graphsvc.incremental import fingerprint, row_hashes
from graphsvc.index.artifacts import load_current
from graphsvc.inference.batches import run_batches, split_rows
from graphsvc.models.user_tower import MOVIES, RATINGS, USER_VECTOR, TowerCheckpoint, load_tower
from graphsvc.recommend.artifact import (
    MODEL,
    POPULAR,
    RECOMMENDED_TYPE,
    artifact_name,
    previous_users,
    publish_recommendations,
)
from graphsvc.recommend.ranking import most_popular, top_unrated
from graphsvc.recommend.ratings import RatingHistories, load_ratings
from graphsvc.runs import RunLock, job_journal, job_lock_path
from graphsvc.runs.timing import PhaseTimer
from graphsvc.store.base import GraphStore

#: requests of Python dicts of arrays in, {output: array} out, in order (a Triton model's infer_many)
UserVectors = Callable[[Iterable[Mapping[str, np.ndarray]]], Iterator[Mapping[str, np.ndarray]]]


@dataclass(frozen=True)
class RecommendUsersConfig:
    users: str = "Users"
    ratings: str = "Ratings"
    rating: str = "rating"
    timestamp: str = "timestamp"
    model: str = "user_tower"
    checkpoint: Path = Path("checkpoints/user_tower.pt")
    top_k: int = 10
    batch_size: int = 1024  # users per Triton request
    max_in_flight: int = 2
    keep: int = 3
    full: bool = False  # recompute every user, not only those whose ratings changed
    ready_timeout: float = 10.0
    stale_after: float = 600.0  # seconds without a heartbeat after which another host's lock is stale


def recommend_users(store: GraphStore, triton, index_dir: Path,
                    config: RecommendUsersConfig = RecommendUsersConfig(),
                    on_progress: Callable[[int], None] | None = None) -> dict:
    """`triton`: a TritonClient serving `config.model`."""
    triton.wait_ready(timeout=config.ready_timeout, models=[config.model])
    version = triton.latest_version(config.model)
    infer_many = partial(triton.infer_many, config.model, max_in_flight=config.max_in_flight)
    return recommend_with(store, infer_many, index_dir, config, {"name": config.model, "version": version},
                          on_progress)


def recommend_with(store: GraphStore, infer_many: UserVectors, index_dir: Path, config: RecommendUsersConfig,
                   model: dict, on_progress: Callable[[int], None] | None = None) -> dict:
    """The job with the user vectors from `infer_many` (Triton's, or an in-process
    model's for the bench), `model` naming it in the manifest; under the artifact's lock."""
    with RunLock(job_lock_path(index_dir, artifact_name(config.users)), stale_after=config.stale_after) as lock:
        summary = _recommend(store, infer_many, Path(index_dir), config, model, on_progress)
    if lock.took_over:
        summary["lock_taken_over_from"] = lock.took_over
    return summary


def plan_recommendations(store: GraphStore, index_dir: Path,
                         config: RecommendUsersConfig = RecommendUsersConfig()) -> dict:
    """What a run would compute, without Triton and without changing anything (the dry
    run): the same input hashes compared with the last published artifact. The served
    model's version is not known here, so a new export alone is not seen."""
    timer = PhaseTimer()
    with timer("diff"):
        inputs = _inputs(store, config)
        plan = {"model": {"name": config.model}, "checkpoint": inputs.digest, "top_k": config.top_k}
        previous, why_full = _previous(Path(index_dir), config, plan)
        todo = _changed(inputs.known.user_keys, inputs.hashes, previous)
        rewrites = _rewrites(previous, inputs.known.user_keys, inputs.unwritten, todo)
    rated = int((inputs.known.degrees()[todo] > 0).sum())
    return {"users": config.users, "ratings": config.ratings, "num_users": inputs.known.num_users,
            "mode": "full" if previous is None else "incremental", "full_because": why_full,
            "would_compute_users": int(len(todo)), "would_embed_users": rated,
            "would_answer_popular": int(len(todo)) - rated,
            "would_rewrite_users": rewrites.num_rows, "artifact": artifact_name(config.users),
            "dry_run": True, "seconds": timer.summary()}


@dataclass(frozen=True)
class _Inputs:
    tower: TowerCheckpoint
    digest: str
    histories: RatingHistories  # as pulled
    known: RatingHistories  # on the tower's movie list
    hashes: np.ndarray
    unwritten: np.ndarray  # bool per user: the document holds no `recommended_source` (new, or replaced since)


def _inputs(store: GraphStore, config: RecommendUsersConfig) -> _Inputs:
    """The checkpoint, the users' histories on its movies and each user's input hash."""
    tower = load_tower(config.checkpoint)
    digest = _file_digest(config.checkpoint)
    histories = load_ratings(store, config.users, config.ratings, config.rating, config.timestamp)
    written = pa.Table.from_batches(list(store.pull(config.users, {"recommended_source": pa.string()})),
                                    schema=pa.schema([("_key", pa.string()), ("recommended_source", pa.string())]))
    store.release()  # the service may read the store while we compute; the write-back reopens it
    unwritten = ~pc.is_in(histories.user_keys, value_set=written.filter(
        written.column("recommended_source").is_valid()).column("_key").combine_chunks()).to_numpy(
        zero_copy_only=False)
    if histories.movie_collection and histories.movie_collection != tower.movie_collection:
        raise ConfigError(f"'{config.ratings}' rates '{histories.movie_collection}', but {config.checkpoint} was "
                          f"trained on '{tower.movie_collection}' — train one with 'jobs train-recommender'")
    known = histories.on_vocabulary(tower.movie_keys)
    return _Inputs(tower, digest, histories, known, input_hashes(known, tower.settings.history), unwritten)


def _recommend(store: GraphStore, infer_many: UserVectors, index_dir: Path, config: RecommendUsersConfig,
               model: dict, on_progress: Callable[[int], None] | None) -> dict:
    timer = PhaseTimer()
    with timer("pull"):
        inputs = _inputs(store, config)
    tower, digest, histories, known, hashes = inputs.tower, inputs.digest, inputs.histories, inputs.known, \
        inputs.hashes
    history = tower.settings.history
    _check_served(infer_many, tower, known, model, config.checkpoint)

    plan = {"model": model, "checkpoint": digest, "top_k": config.top_k}
    previous, why_full = _previous(index_dir, config, plan)
    todo = _changed(known.user_keys, hashes, previous)
    rated_users = todo[known.degrees()[todo] > 0]
    journal = job_journal(index_dir, artifact_name(config.users), "recommend-users", fingerprint(
        known.user_keys.take(pa.array(rated_users)), hashes[rated_users], plan, config.batch_size))

    with timer("embed"):
        batches = split_rows(rated_users, config.batch_size)

        def request(b: int) -> dict[str, np.ndarray]:
            ids, ratings = known.window(batches[b], history)
            return {MOVIES: ids, RATINGS: ratings}

        results = run_batches(config.model, [f"U{b}" for b in range(len(batches))], [len(b) for b in batches],
                              request, lambda requests: (r[USER_VECTOR] for r in infer_many(requests)),
                              journal=journal, on_progress=on_progress)
        vectors = np.concatenate(results) if results else np.zeros((0, tower.settings.dim + 1), np.float32)

    with timer("rank"):
        movie_vectors = tower.model.movie_vectors().detach().numpy()
        popularity = tower.popularity.numpy().astype(np.int64)
        rated_indptr = np.concatenate([[0], np.cumsum(known.degrees()[rated_users])]).astype(np.int64)
        rated = np.concatenate([known.rated(u) for u in rated_users]) if len(rated_users) else np.zeros(0, np.int64)
        ids, scores = top_unrated(vectors, movie_vectors, rated_indptr, rated, config.top_k)
        popular = most_popular(popularity, config.top_k)
        changed = _user_rows(known, tower, todo, rated_users, vectors, ids, scores, popular, popularity, hashes)

    with timer("write_back"):
        rewritten = _rewrites(previous, known.user_keys, inputs.unwritten, todo)
        lists = pa.concat_tables([changed, rewritten.cast(changed.schema)]) if rewritten.num_rows else changed
        written = store.update_attributes(config.users, lists.select(["_key", "recommended"]).append_column(
            "recommended_source", lists.column("source"))) if lists.num_rows else 0

    with timer("publish"):
        users_table = _carried(previous, changed, known.user_keys)
        unchanged = previous is not None and not len(todo) and previous.num_rows == users_table.num_rows
        # nothing new: the live version stays (no version of identical content)
        manifest = load_current(index_dir, artifact_name(config.users)).manifest if unchanged else \
            publish_recommendations(
                index_dir, config.users, movie_vectors, tower.movie_keys, popularity, users_table, model=model,
                extra={"job": "recommend-users", "top_k": config.top_k, "checkpoint": str(config.checkpoint),
                       "checkpoint_digest": digest, "movies": tower.movie_collection, "ratings": config.ratings,
                       "history": history},
                keep=config.keep)
    journal.remove()
    sources = pc.value_counts(users_table.column("source")).to_pylist() if users_table.num_rows else []
    seconds = timer.seconds.get("embed", 0.0)
    return {
        "users": config.users,
        "ratings": config.ratings,
        "movies": tower.movie_collection,
        "num_users": known.num_users,
        "num_movies": known.num_movies,
        "ratings_used": int(len(known.movies)),
        "ratings_of_unknown_movies": int(len(histories.movies) - len(known.movies)),
        "computed_users": int(len(todo)),
        "embedded_users": int(len(rated_users)),
        "written": int(written),
        "rewritten_users": int(rewritten.num_rows),
        "mode": "full" if previous is None else "incremental",
        "full_because": why_full,
        "by_source": {row["values"]: row["counts"] for row in sources},
        "artifact": artifact_name(config.users),
        "index_version": manifest.version,
        "published": not unchanged,
        "model": model,
        "users_per_second": round(len(rated_users) / seconds, 1) if seconds and len(rated_users) else None,
        "batches": {"computed": journal.computed, "reused": journal.reused},
        "seconds": timer.summary(),
    }


def input_hashes(histories: RatingHistories, history: int, block: int = 65_536) -> np.ndarray:
    """Per user, a hash of exactly what the tower reads: the latest `history` movies and
    ratings, in order (padded to `history`, so a user's hash never depends on others)."""
    out = np.zeros(histories.num_users, np.uint64)
    for start in range(0, histories.num_users, block):
        users = np.arange(start, min(start + block, histories.num_users))
        ids, ratings = histories.window(users, history)
        padded = np.zeros((len(users), 2 * history), np.float32)
        padded[:, :ids.shape[1]] = ids.astype(np.uint32).view(np.float32)  # the bits, not the values
        padded[:, history:history + ratings.shape[1]] = ratings
        out[users] = row_hashes(padded)
    return out


def _file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _check_served(infer_many: UserVectors, tower: TowerCheckpoint, known: RatingHistories, model: dict,
                  checkpoint: Path) -> None:
    """The served model must be the checkpoint's (its movie vectors and movie list come
    from the checkpoint): one small request, compared with the tower in this process."""
    users = np.flatnonzero(known.degrees() > 0)[:4]
    if not len(users):
        return
    ids, ratings = known.window(users, tower.settings.history)
    served = next(iter(infer_many([{MOVIES: ids, RATINGS: ratings}])))[USER_VECTOR]
    with torch.inference_mode():
        local = tower.model(torch.from_numpy(ids), torch.from_numpy(ratings)).numpy()
    if served.shape != local.shape or not np.allclose(served, local, atol=1e-4):
        raise ModelRepositoryError(
            f"'{model['name']}' v{model['version']} does not compute what {checkpoint} does — export it with "
            f"'jobs export-models --user-tower {checkpoint}'")


def _previous(index_dir: Path, config: RecommendUsersConfig, plan: dict) -> tuple[pa.Table | None, str | None]:
    """The last artifact's users when this run can build on it, else (None, why not)."""
    if config.full:
        return None, "asked for (--full)"
    try:
        loaded = load_current(index_dir, artifact_name(config.users))
    except IndexNotFound:
        return None, "no earlier recommendations"
    extra = loaded.manifest.extra
    was = {"model": loaded.manifest.model, "checkpoint": extra.get("checkpoint_digest"), "top_k": extra.get("top_k")}
    for name, now in plan.items():
        before = was[name]
        if isinstance(now, dict) and isinstance(before, dict):  # a dry run knows the model's name only
            before = {k: before.get(k) for k in now}
        if before != now:
            return None, f"the {name.replace('_', ' ')} changed since version {loaded.version}"
    return previous_users(loaded), None


def _changed(user_keys: pa.Array, hashes: np.ndarray, previous: pa.Table | None) -> np.ndarray:
    """Rows of the users whose input hash is not the one the last artifact recorded."""
    if previous is None:
        return np.arange(len(user_keys))
    at = pc.index_in(user_keys, value_set=previous.column("_key").combine_chunks())
    known = at.is_valid().to_numpy(zero_copy_only=False)
    before = np.zeros(len(user_keys), np.uint64)
    before[known] = previous.column("input_hash").combine_chunks().to_numpy()[
        at.drop_null().to_numpy().astype(np.int64)]
    return np.flatnonzero(~known | (before != hashes))


def _user_rows(known: RatingHistories, tower: TowerCheckpoint, todo: np.ndarray, rated_users: np.ndarray,
               vectors: np.ndarray, ids: np.ndarray, scores: np.ndarray, popular: np.ndarray,
               popularity: np.ndarray, hashes: np.ndarray) -> pa.Table:
    """users.arrow rows (and the write-back) of the computed users."""
    movie_keys = tower.movie_keys.to_pylist()
    collection = tower.movie_collection
    by_user = {int(u): i for i, u in enumerate(rated_users)}
    popular_list = [{"_key": movie_keys[m], "_id": f"{collection}/{movie_keys[m]}", "score": float(popularity[m])}
                    for m in popular]
    recommended, source, vector_list, rated_list = [], [], [], []
    for user in todo.tolist():
        i = by_user.get(user)
        if i is None:
            recommended.append(popular_list)
            source.append(POPULAR)
            vector_list.append(None)
            rated_list.append([])
            continue
        row = [{"_key": movie_keys[m], "_id": f"{collection}/{movie_keys[m]}", "score": float(s)}
               for m, s in zip(ids[i].tolist(), scores[i].tolist()) if m >= 0]
        recommended.append(row)
        source.append(MODEL)
        vector_list.append(vectors[i].tolist())
        rated_list.append(known.rated(user).tolist())
    return pa.table({
        "_key": known.user_keys.take(pa.array(todo, pa.int64())),
        "source": pa.array(source, pa.string()),
        "vector": pa.array(vector_list, pa.list_(pa.float32())),
        "rated": pa.array(rated_list, pa.list_(pa.int32())),
        "input_hash": pa.array(hashes[todo], pa.uint64()),
        "recommended": pa.array(recommended, RECOMMENDED_TYPE),
    })


def _rewrites(previous: pa.Table | None, user_keys: pa.Array, unwritten: np.ndarray, todo: np.ndarray) -> pa.Table:
    """The last artifact's rows of users not recomputed whose document lost its list
    since (replaced, e.g. by a restore of the dump): written back again as they were,
    without Triton and without a new version."""
    again = unwritten.copy()
    again[todo] = False
    if previous is None or not again.any():
        return previous.schema.empty_table() if previous is not None else pa.table({"_key": pa.array([], pa.string())})
    return previous.filter(pc.is_in(previous.column("_key"), value_set=user_keys.filter(pa.array(again))))


def _carried(previous: pa.Table | None, changed: pa.Table, user_keys: pa.Array) -> pa.Table:
    """This run's users: the computed rows, and the others as the last artifact had them
    (users no longer in the store are left out)."""
    if previous is None:
        return changed
    keep = pc.and_(pc.is_in(previous.column("_key"), value_set=user_keys),
                   pc.invert(pc.is_in(previous.column("_key"), value_set=changed.column("_key").combine_chunks())))
    return pa.concat_tables([previous.filter(keep).cast(changed.schema), changed])
