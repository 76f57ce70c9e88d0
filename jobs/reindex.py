"""`jobs reindex`: nightly re-indexing that costs in proportion to what changed.

Recipe: lock → pull the target's inputs (products: features + co-purchases; movies:
texts, and their edges to people where the movie model is graph-aware) → diff: hash them
per document and compare with the last run's snapshot → embed: recompute only what
depends on a change (products: layer by layer, the nodes whose layer inputs moved,
`graphsvc.incremental.propagation`; movies: the changed texts, and graph-aware the movies
a changed text or set of people reaches within the layers, `GraphMoviesTarget`) through
Triton, batch by batch into a journal → index: update the FAISS index in place or
rebuild it, and refresh the `similar` lists that can have changed
(`graphsvc.incremental.policy`) → write back the rows that changed, chunk by chunk →
publish the next index version → commit the new snapshot.

Crash safety: every finished batch, the index step, each write-back chunk and the
publish are recorded in a journal directory named by a fingerprint of the plan (the
last snapshot + tonight's input hashes), so a rerun after a crash with the same inputs
redoes none of them; the snapshot is replaced only at the end, in one rename. Readers
only ever see complete index versions (`graphsvc.index.artifacts.publish`).

`executor="ray"`: the pull is a Ray read task per key range (`graphsvc.distributed.pull.
RayReads`) and the embed step runs on a Ray cluster (`_RayRunner`): each layer's rows
to recompute in partitions on Triton actors (`graphsvc.distributed.layerwise.
apply_layer_on_ray`, journaled as RL{layer}-P{p}), the changed texts through Ray Data
(`graphsvc.distributed.texts`, journaled whole as RT), and a rebuilt index with every
row's lists on Ray tasks (`graphsvc.distributed.publish.index_on_ray`), and on ArangoDB
the write-back by Ray tasks updating the store themselves, a bounded number at once, each
shard journaled as WB-S{n} (`_RayRunner.write_back`); the rest of the recipe — an index
updated in place with its lists refreshed, the embedded store's write-back (one writer) —
runs on the driver as locally.
"""

from __future__ import annotations

import contextlib
import functools
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa

from graphsvc.errors import ConfigError
from graphsvc.files import atomic_path
from graphsvc.graph import CSRGraph
from graphsvc.graph.relations import MovieRelations
from graphsvc.incremental.hashes import fingerprint
from graphsvc.incremental.policy import IndexUpdate, SimilarLists, carried_similar, published_index, update_index
from graphsvc.incremental.propagation import LayerStep
from graphsvc.incremental.slots import SlotPlan, plan_slots, union_ids
from graphsvc.incremental.snapshot import Snapshot, replaced_since, revisions_by_key
from graphsvc.incremental.targets import (
    Diff,
    EmbedResult,
    GraphMoviesTarget,
    InputReads,
    LocalReads,
    MovieLayerStep,
    MoviesTarget,
    ProductsTarget,
    TextStep,
)
from graphsvc.index.artifacts import current_version, publish
from graphsvc.index.faiss_index import VectorIndex
from graphsvc.index.similar import embedding_array, index_with_neighbours, similar_array
from graphsvc.inference.layerwise import apply_layer
from graphsvc.inference.relational import apply_movie_layer, served_movie_model
from graphsvc.inference.runners import TritonLayers, layer_models
from graphsvc.inference.texts import encode_texts
from graphsvc.runs import RunJournal, RunLock, kill_point
from graphsvc.runs.timing import PhaseTimer
from graphsvc.store.base import GraphStore
from graphsvc.triton.client import TritonClient

TARGETS = {"products": ProductsTarget, "movies": MoviesTarget}
STATE_DIR = ".reindex"
INPUT_HASHES = 2  # the version of the input hashes a snapshot holds (graphsvc.incremental.hashes)


@dataclass(frozen=True)
class ReindexConfig:
    target: str = "products"  # "products": GraphSAGE over a graph; "movies": sentence encoder over texts
    collection: str = ""  # default: the target's name
    edges: str = "bought_together"
    features: str = "features"
    text: str = "description"
    fallback_text: str = "title"
    model: str = ""  # default: graphsage / sentence_encoder
    top_k: int = 10
    layer_batch_size: int = 16_384
    text_batch_size: int = 64
    max_in_flight: int = 2
    keep: int = 3
    #: propagation tolerance, relative to the typical size of a layer's input
    #: (see graphsvc.incremental.propagation)
    tolerance: float = 0.01
    #: a vector that moved by more than this (L2 of the change of its unit vector, which
    #: bounds the change of any cosine score with it) is searched for the similar windows
    #: it now enters; smaller moves re-score the entries they are in (see refresh_similar)
    similar_tolerance: float = 0.05
    #: rebuild the index (and all similar lists) when more than this share of vectors
    #: moved farther than similar_tolerance or were removed
    rebuild_share: float = 0.25
    write_batch: int = 250_000  # rows per write-back chunk (each one a journal step)
    full: bool = False
    dry_run: bool = False
    stale_after: float = 600.0
    ready_timeout: float = 10.0
    executor: str = "local"  # or "ray": the embed step on a Ray cluster
    ray_address: str | None = None  # None: a Ray started on this machine for the job
    partitions: int = 0  # Ray: partitions of a layer's rows (0: graphsvc.distributed.partitions.default_partitions)
    ray_actors: int = 2  # Ray: actors calling Triton, one client each
    ray_order: str = "bfs"  # Ray: the node order partitions are ranges of (bfs or key)
    ray_broadcast: bool | None = None  # Ray: force how a layer's input reaches the partitions (None: by size)
    #: movies: "text", "graph", or "auto" (graph when Triton serves `graph_model` and the catalogue has its edges)
    movie_embedding: str = "auto"
    graph_model: str = "movie_graph"

    def resolved(self) -> "ReindexConfig":
        if self.target not in TARGETS:
            raise ConfigError(f"unknown reindex target '{self.target}' (products or movies)")
        if self.executor not in ("local", "ray"):
            raise ConfigError(f"unknown executor '{self.executor}' (local or ray)")
        if self.tolerance < 0 or self.similar_tolerance < 0:
            raise ConfigError("tolerances must not be negative")
        return replace(self, collection=self.collection or self.target,
                       model=self.model or TARGETS[self.target].default_model)


def state_dir(index_dir: Path, collection: str) -> Path:
    return Path(index_dir) / STATE_DIR / collection


def reindex(
    store: GraphStore,
    triton: TritonClient | None,
    index_dir: Path,
    config: ReindexConfig = ReindexConfig(),
    on_progress: Callable[[int], None] | None = None,
) -> dict:
    config = config.resolved()
    directory = state_dir(index_dir, config.collection)
    if config.dry_run:  # computes nothing: no cluster to join
        return _Run(store, triton, Path(index_dir), directory, config, _TritonRunner(triton, config, on_progress)).run()
    if config.executor == "ray" and config.target == "movies" and config.movie_embedding == "graph":
        raise ConfigError("the graph-aware movie model re-indexes locally only: use --executor local, or --model text")
    with RunLock(directory / "LOCK", stale_after=config.stale_after) as lock, contextlib.ExitStack() as stack:
        runner: _TritonRunner = _TritonRunner(triton, config, on_progress)
        if config.executor == "ray" and triton is not None:
            from graphsvc.distributed.cluster import ray_session

            stack.enter_context(ray_session(config.ray_address))
            runner = _RayRunner(triton, config, on_progress)
            stack.callback(runner.release)
        summary = _Run(store, triton, Path(index_dir), directory, config, runner).run()
        if lock.took_over:
            summary["lock_taken_over_from"] = lock.took_over
        return summary


def _target(config: ReindexConfig, triton: TritonClient | None,
            store: GraphStore) -> ProductsTarget | MoviesTarget | GraphMoviesTarget:
    if config.target == "products":
        return ProductsTarget(config.collection, config.edges, config.features, config.tolerance)
    text = MoviesTarget(config.collection, config.text, config.fallback_text, config.model)
    if config.movie_embedding == "text" or (config.movie_embedding == "auto" and config.executor == "ray"):
        return text
    served = served_movie_model(triton, config.graph_model) if triton is not None else None
    if served is None:
        if config.movie_embedding == "auto":
            return text
        raise ConfigError(f"graph-aware re-indexing needs Triton serving '{config.graph_model}_layer0' — export it "
                          "with 'jobs export-models' (or reindex with --model text)")
    models, relations = served
    has_edges = any(store.has_collection(name) and store.collection(name).count for name in relations)
    if not has_edges and config.movie_embedding == "auto":
        return text
    return GraphMoviesTarget(config.collection, config.text, config.fallback_text, config.model, config.graph_model,
                             models, relations)


class _Run:
    def __init__(self, store, triton, index_dir: Path, directory: Path, config: ReindexConfig,
                 runner: "_TritonRunner"):
        self.store, self.triton, self.index_dir, self.dir, self.config = store, triton, index_dir, directory, config
        self.target = _target(config, triton, store)
        self.runner = runner
        self.timer = PhaseTimer()
        self.summary: dict = {"collection": config.collection, "target": config.target, "executor": config.executor}

    # ------------------------------------------------------------------ recipe
    def run(self) -> dict:
        config = self.config
        snapshot = None if config.full else Snapshot.load(self.dir)
        with self.timer("pull"):
            pulled = self.target.pull(self.store, self.runner.reads)
        plan = plan_slots(snapshot.keys if snapshot else None, pulled.keys)
        with self.timer("diff"):
            inputs = pulled.in_slots(plan)
            del pulled  # the pulled order's copy of the features
            # documents replaced by someone else since our write-back: a replace drops what we wrote
            rewritten = replaced_since(snapshot, plan, revisions_by_key(self.store, config.collection, inputs.keys))
            diff = self.target.diff(inputs, snapshot, plan)
        model_version = self._model_version() if self.triton is not None and not config.dry_run else None
        full, reason = self._full_reason(snapshot, model_version)
        self.summary.update(
            mode="full" if full else "incremental", full_reason=reason, documents=len(plan.order),
            new=int(len(plan.added)), removed=int(len(plan.removed)), rewritten_documents=int(rewritten.sum()),
            **diff.counts,
        )
        if config.dry_run:
            self.summary.update(self.target.estimate(inputs, diff, plan, full))
            self.summary["seconds"] = self.timer.summary()
            return self.summary
        if self.triton is None:
            raise ConfigError("reindex needs a Triton client unless --dry-run")

        # each hash array a part of its own: a list would be hashed as its printed (elided) form
        run_id = fingerprint(snapshot.id if snapshot else None, inputs.keys, *diff.hashes.values(),
                             model_version, full, self._settings())
        journal = RunJournal(self.dir / f"run-{run_id}")
        for entry in self.dir.glob("run-*"):  # plans of other inputs are stale now
            if entry != journal.directory:
                RunJournal(entry).remove()
        self.summary["run_id"] = run_id

        self.store.release()  # the service may read the store while we compute; the write-back reopens it
        with self.timer("embed"):
            result = self.target.embed(inputs, diff, snapshot, plan, full, self.runner, journal)
        self.summary["recomputed_per_layer"] = result.recomputed_per_layer
        changed = union_ids(result.written, np.flatnonzero(rewritten))
        if not full and not (result.shift > 0).any() and not len(plan.removed) and not len(plan.added):
            # no vector moved: the published index stands; rewrite only what others replaced
            lists = carried_similar(snapshot, plan, 2 * config.top_k)
            lists.changed = np.zeros(0, np.int64)
            with self.timer("write_back"):
                written = self._write_back(inputs.keys, plan, result, changed, lists, False, journal)
            index_version = snapshot.meta["index_version"]
            self._commit(snapshot, inputs.keys, diff, result, lists, model_version, index_version, journal)
            self.summary.update(mode="unchanged", index_version=index_version, written=written,
                                re_embedded=int(result.re_embedded),
                                batches=self.runner.batches(journal), **self.runner.report())
            self.summary["seconds"] = self.timer.summary()
            return self.summary

        with self.timer("index"):
            update = self._index(snapshot, plan, result, full, journal)

        def write_back():
            with self.timer("write_back"):
                return self._write_back(inputs.keys, plan, result, changed, update.lists, full, journal)

        # the write-back (the store's work) runs beside the publish and the snapshot's
        # arrays (file work); the snapshot is committed once both are done
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="reindex-write-back") as pool:
            writing = pool.submit(write_back)
            try:
                with self.timer("publish"):
                    version = self._publish(update, inputs.keys, model_version, journal, result)
                with self.timer("commit"):
                    staged = self._stage(diff, result, update.lists)
            except BaseException:
                with contextlib.suppress(BaseException):  # the first error is the one to report
                    writing.result()
                raise
            written = writing.result()
        with self.timer("commit"):
            self._commit(snapshot, inputs.keys, diff, result, update.lists, model_version, version, journal,
                         update.info, staged=staged)
        info = update.info
        self.summary.update(
            re_embedded=int(result.re_embedded), moved=int((result.shift > 0).sum()),
            moved_far=info["far_movers"], similar_searched=info["similar_searched"],
            similar_changed=info["similar_changed"],
            written=written, index_version=version, index=info,
            batches=self.runner.batches(journal), **self.runner.report(),
        )
        self.summary["seconds"] = self.timer.summary()
        return self.summary

    def _settings(self) -> dict:
        c = self.config
        settings = {"top_k": c.top_k, "tolerance": c.tolerance, "similar_tolerance": c.similar_tolerance,
                    "layer_batch_size": c.layer_batch_size, "text_batch_size": c.text_batch_size, "model": c.model,
                    "rebuild_share": c.rebuild_share, "input_hashes": INPUT_HASHES}
        if isinstance(self.target, GraphMoviesTarget):  # a text snapshot holds no graph states: a full run
            settings.update(embedding="graph", graph_model=c.graph_model)
        if c.executor == "ray":  # how the rows split decides what a journaled partition holds
            settings.update(executor="ray", partitions=c.partitions, ray_actors=c.ray_actors, ray_order=c.ray_order)
        return settings

    def _model_version(self) -> str:
        models = self.target.model_names(self.runner)
        self.triton.wait_ready(timeout=self.config.ready_timeout, models=models)
        if getattr(self.target, "all_versions", False):
            return "/".join(self.triton.latest_version(model) for model in models)
        return self.triton.latest_version(models[0])

    def _full_reason(self, snapshot: Snapshot | None, model_version) -> tuple[bool, str | None]:
        if self.config.full:
            return True, "--full"
        if snapshot is None:
            return True, "no earlier run"
        meta = snapshot.meta
        if model_version is not None and meta.get("model_version") != model_version:
            return True, f"model version {meta.get('model_version')} → {model_version}"
        before = meta.get("settings") or {}
        # what the stored windows, states, hashes depend on
        for name in ("top_k", "model", "input_hashes", "embedding"):
            if before.get(name) != self._settings().get(name):
                return True, f"{name} changed ({before.get(name)} → {self._settings().get(name)})"
        return False, None

    # ------------------------------------------------------------------ index
    def _index(self, snapshot: Snapshot | None, plan: SlotPlan, result: EmbedResult, full: bool,
               journal: RunJournal) -> IndexUpdate:
        """The updated (or rebuilt) index and every row's similar window, journaled."""
        if journal.done("indexed"):
            return IndexUpdate(VectorIndex.load(journal.directory / "index.faiss", metric="cosine"),
                               SimilarLists.load(journal.directory), journal.value("indexed"))
        c = self.config
        update = update_index(
            snapshot, plan, result.embedding, result.shift, full, top_k=c.top_k,
            similar_tolerance=c.similar_tolerance, rebuild_share=c.rebuild_share,
            published=lambda: published_index(self.index_dir, c.collection, snapshot.meta.get("index_version")),
            build_index=self.runner.index_builder(),
        )
        with atomic_path(journal.directory / "index.faiss") as tmp:
            update.index.save(tmp)
        update.lists.save(journal.directory)
        journal.mark("indexed", update.info)
        return update

    # ------------------------------------------------------------- write back
    def _write_back(self, keys: pa.Array, plan: SlotPlan, result: EmbedResult, changed: np.ndarray,
                    lists: SimilarLists, full: bool, journal: RunJournal) -> int:
        """The rows whose embedding, prediction or top-k list changed, chunk by chunk (by
        the runner's workers where it can, `_RayRunner.write_back`; else here)."""
        k = self.config.top_k
        rows = (np.arange(len(keys)) if full or lists.changed is None
                else union_ids(changed, lists.changed, plan.added))
        if self.runner.write_back(self.store, journal, keys, rows, result, lists):
            return int(len(rows))
        size = self.config.write_batch
        for number, start in enumerate(range(0, len(rows), size)):
            if journal.done(f"write-{number}"):
                continue
            chunk = rows[start : start + size]
            columns = {
                "_key": keys.take(pa.array(chunk)),
                "embedding": embedding_array(result.embedding[chunk]),
                "similar": similar_array(keys, lists.ids[chunk, :k], lists.scores[chunk, :k]),
            }
            if result.predicted is not None:
                columns["predicted_category"] = pa.array(result.predicted[chunk])
            for name, values in result.columns.items():
                columns[name] = embedding_array(values[chunk])
            self.store.update_attributes(self.config.collection, pa.table(columns))
            journal.mark(f"write-{number}", {"rows": int(len(chunk))})
            kill_point("write_back", number + 1)
        return int(len(rows))

    # ---------------------------------------------------------------- publish
    def _publish(self, update: IndexUpdate, keys: pa.Array, model_version, journal: RunJournal,
                 result: EmbedResult) -> int:
        if journal.done("published"):
            return journal.value("published")["version"]
        extra, model = {}, {"name": self.config.model, "version": model_version}
        if isinstance(self.target, GraphMoviesTarget):
            extra = {"space": "graph", **self._publish_text_index(keys, model_version, journal, result)}
            model = {"name": self.target.graph_model, "version": model_version, "text_model": self.config.model}
        kill_point("publish")
        manifest = publish(
            self.index_dir, self.config.collection, update.index, keys, model=model,
            extra={"job": "reindex", "top_k": self.config.top_k, "calibration": update.info.get("calibration"),
                   "index_update": update.info["action"], "run_id": self.summary["run_id"], **extra},
            keep=self.config.keep, index_file=journal.directory / "index.faiss",
        )
        journal.mark("published", {"version": manifest.version})
        kill_point("published")
        return manifest.version

    def _publish_text_index(self, keys: pa.Array, model_version, journal: RunJournal, result: EmbedResult) -> dict:
        """Graph-aware movies: the text vectors' own index `<collection>.text` (what text
        searches use), published again when a text or the set of movies changed."""
        name = f"{self.config.collection}.text"
        if not journal.done("text-published"):
            current = current_version(self.index_dir, name)
            if result.text_space is None and current is not None:
                version = current
            else:
                index = VectorIndex.build(result.columns["text_embedding"], metric="cosine")
                version = publish(self.index_dir, name, index, keys,
                                  model={"name": self.config.model, "version": model_version},
                                  extra={"job": "reindex", "space": "text", "text_attribute": self.config.text,
                                         "of_collection": self.config.collection,
                                         "calibration": index.calibrate_nprobe(k=self.config.top_k)},
                                  keep=self.config.keep).version
            journal.mark("text-published", {"version": version})
        self.summary["text_index"] = {"name": name, "version": journal.value("text-published")["version"]}
        return {"text_index": name, "text_index_version": journal.value("text-published")["version"]}

    # ----------------------------------------------------------------- commit
    def _stage(self, diff: Diff, result: EmbedResult, lists: SimilarLists) -> Path:
        """The snapshot's arrays, written (durably) where no run reads them yet."""
        return Snapshot.stage(self.dir, {**diff.hashes, **result.arrays, **lists.arrays()})

    def _commit(self, snapshot: Snapshot | None, keys: pa.Array, diff: Diff, result: EmbedResult,
                lists: SimilarLists, model_version, index_version, journal: RunJournal, info: dict | None = None,
                staged: Path | None = None) -> None:
        staged = staged or self._stage(diff, result, lists)
        previous = snapshot.meta if snapshot else {}
        info = info or {}
        meta = {
            "collection": self.config.collection, "target": self.config.target, "model_version": model_version,
            "settings": self._settings(), "index_version": index_version, "scales": result.scales,
            "calibration": info.get("calibration", previous.get("calibration")),
            "trained_count": info.get("trained_count", previous.get("trained_count")),
            "run_id": self.summary.get("run_id"), "finished_at": time.time(),
        }
        # revisions as they are after our write-back (on ArangoDB it changes them too)
        Snapshot.finish(staged, meta, keys, revisions_by_key(self.store, self.config.collection, keys))
        self.store.put_state(f"reindex:{self.config.collection}", {
            "run_id": meta["run_id"], "index_version": index_version, "finished_at": meta["finished_at"],
        })
        journal.remove()


# -------------------------------------------------------------- Triton seam


class _TritonRunner:
    """Where the models run: Triton, through the inference engine (graphsvc.inference),
    each finished batch saved in the journal (layers as L{layer}-B{b}, texts as T-B{b})
    so a rerun reuses it."""

    def __init__(self, triton: TritonClient | None, config: ReindexConfig, on_progress):
        self.triton, self.config, self.on_progress = triton, config, on_progress
        self.reads: InputReads = LocalReads()  # where the target's inputs are read

    def layer_models(self) -> list[str]:
        return layer_models(self.triton, self.config.model)

    def index_builder(self) -> Callable:
        """What builds a rebuilt index and its lists (index_with_neighbours' signature)."""
        return index_with_neighbours

    def layer_step(self, models: list[str], journal: RunJournal) -> LayerStep:
        runner = TritonLayers(self.triton, models, max_in_flight=self.config.max_in_flight)

        def apply(layer: int, rows: np.ndarray, inputs: np.ndarray, graph: CSRGraph) -> np.ndarray | None:
            if not len(rows):
                return None
            return apply_layer(runner, layer, graph, inputs, rows, batch_size=self.config.layer_batch_size,
                               journal=journal, on_progress=self.on_progress)

        return apply

    def text_step(self, journal: RunJournal) -> TextStep:
        model = self.config.model
        infer_many = functools.partial(self.triton.infer_many, model, max_in_flight=self.config.max_in_flight)

        def embed_texts(texts: Sequence[str]) -> np.ndarray | None:
            if not len(texts):
                return None
            return encode_texts(texts, infer_many, model, batch_size=self.config.text_batch_size, journal=journal,
                                on_progress=self.on_progress)

        return embed_texts

    def movie_layer_step(self, models: list[str], relations: MovieRelations, journal: RunJournal) -> MovieLayerStep:
        runner = TritonLayers(self.triton, models, max_in_flight=self.config.max_in_flight)

        def apply(layer: int, rows: np.ndarray, inputs: np.ndarray) -> np.ndarray:
            return apply_movie_layer(runner, layer, relations, inputs, rows, batch_size=self.config.layer_batch_size,
                                     journal=journal, on_progress=self.on_progress)

        return apply

    def write_back(self, store: GraphStore, journal: RunJournal, keys: pa.Array, rows: np.ndarray,
                   result: EmbedResult, lists: SimilarLists) -> bool:
        """Write `rows` back elsewhere than on the driver; False: the driver writes them."""
        return False

    def batches(self, journal: RunJournal) -> dict:
        """The summary's `batches`: journaled steps computed by this run and reused."""
        return {"computed": journal.computed, "reused": journal.reused}

    def report(self) -> dict:
        """What the summary says about where the models ran (nothing more, here)."""
        return {}

    def release(self) -> None:
        pass


class _RayRunner(_TritonRunner):
    """The models on a Ray cluster already joined: each layer's rows to recompute in
    partitions on actors with a Triton client each (`apply_layer_on_ray`, partition p of
    layer l journaled as RL{l}-P{p} — the local runner's L{l}-B{b} are another plan's),
    the texts through Ray Data (`encode_texts_on_ray`, journaled whole as RT)."""

    def __init__(self, triton: TritonClient, config: ReindexConfig, on_progress):
        from graphsvc.distributed.layerwise import SubsetTally
        from graphsvc.distributed.pull import RayReads

        super().__init__(triton, config, on_progress)
        self.reads = RayReads()  # a read task per key range (the embedded store read-only in the workers)
        self.pool = None  # started on the first layer with rows to compute
        self.tally = SubsetTally()
        self.texts = {"computed": 0, "reused": 0}
        self._order: tuple[CSRGraph, np.ndarray] | None = None  # (graph, its node order)
        self.partitions = self.config.partitions  # the layers' partitions (0 until a layer resolves the default)
        self.written: dict = {"where": "driver"}  # the summary's ray.write_back

    def layer_step(self, models: list[str], journal: RunJournal) -> LayerStep:
        from graphsvc.distributed.layerwise import LayerPool, apply_layer_on_ray
        from graphsvc.distributed.partitions import default_partitions, node_order

        c = self.config

        def apply(layer: int, rows: np.ndarray, inputs: np.ndarray, graph: CSRGraph) -> np.ndarray | None:
            if not len(rows):
                return None
            if self._order is None or self._order[0] is not graph:
                self._order = (graph, node_order(graph, c.ray_order))
                self.partitions = c.partitions or default_partitions(graph.num_nodes, c.ray_actors)
            if self.pool is None:
                self.pool = LayerPool(self.triton.url, models, actors=c.ray_actors, batch_size=c.layer_batch_size,
                                      max_in_flight=c.max_in_flight, journal=journal)
            return apply_layer_on_ray(
                self.pool, layer, graph, inputs, rows,
                partitions=self.partitions, order=c.ray_order,
                ranked=self._order[1], broadcast=c.ray_broadcast, journal=journal, tally=self.tally,
                on_progress=self.on_progress)

        return apply

    def text_step(self, journal: RunJournal) -> TextStep:
        from graphsvc.distributed.texts import encode_texts_on_ray

        c = self.config

        def embed_texts(texts: Sequence[str]) -> np.ndarray | None:
            if not len(texts):
                return None
            found = journal.load("RT") if journal.has("RT") else None
            if found is not None and len(found) == len(texts):
                self.texts["reused"] += 1
                return found
            vectors = encode_texts_on_ray(list(texts), self.triton.url, c.model, batch_size=c.text_batch_size,
                                          max_in_flight=c.max_in_flight, actors=c.ray_actors, blocks=c.partitions)
            journal.save("RT", vectors)
            self.texts["computed"] += 1
            kill_point("embed", 1)
            if self.on_progress:
                self.on_progress(len(texts))
            return vectors

        return embed_texts

    def index_builder(self) -> Callable:
        """A rebuild's IVF index and lists from Ray tasks (the same cells, probes and lists
        as the local pass), as many partitions as the layers used (two per actor at least)."""
        from graphsvc.distributed.publish import index_on_ray

        return index_on_ray(max(self.partitions, 2 * self.config.ray_actors))

    def write_back(self, store: GraphStore, journal: RunJournal, keys: pa.Array, rows: np.ndarray,
                   result: EmbedResult, lists: SimilarLists) -> bool:
        """On ArangoDB, the rows in shards of at most `write_batch`, each a Ray task that
        bulk-updates the store itself (`StoreWriteBack`: at most GRAPHSVC_RAY_WRITERS per
        coordinator at once, each shard journaled WB-S{n}, so a rerun writes only the shards
        not yet written). The shards' layout is journaled first (WB-plan): a rerun with
        other settings still means the same rows by WB-S{n}. The embedded store has one
        writer: False, the driver writes its journaled chunks as the local run does."""
        from graphsvc.distributed import publish

        if not len(rows):
            return False
        writing = publish.ray_write_back(store, journal, keys, ())  # which kind; its shards follow
        if not isinstance(writing, publish.StoreWriteBack):
            self.written = {"where": "driver", "reason": "the embedded store has one writer"}
            return False
        if not journal.done(WRITE_PLAN):
            journal.mark(WRITE_PLAN, {"shards": write_shards(len(rows), self.config)})
        k = self.config.top_k
        writing.shards = [publish.Shard(chunk, result.embedding[chunk],
                                        predicted=None if result.predicted is None else result.predicted[chunk],
                                        columns={name: values[chunk] for name, values in result.columns.items()})
                          for chunk in np.array_split(rows, journal.value(WRITE_PLAN)["shards"])]
        writing(store, self.config.collection, publish.Neighbours(lists.ids[:, :k], lists.scores[:, :k]))
        self.written = {"where": "ray", **writing.report}
        return True

    def batches(self, journal: RunJournal) -> dict:
        return {"computed": self.tally.computed + self.texts["computed"],
                "reused": self.tally.reused + self.texts["reused"]}

    def report(self) -> dict:
        c = self.config
        return {"ray": {"partitions": self.partitions, "order": c.ray_order, "actors": c.ray_actors,
                        "pull": self.reads.report, "layers": [layer.to_dict() for layer in self.tally.layers],
                        "write_back": self.written}}

    def release(self) -> None:
        if self.pool is not None:
            self.pool.release()
            self.pool = None


WRITE_PLAN = "WB-plan"  # the journal step holding how many shards a Ray write-back's rows make


def write_shards(rows: int, config: ReindexConfig) -> int:
    """How many shards a Ray write-back splits `rows` into: none over `write_batch` rows,
    and two per actor where there are rows enough (so the writers all have work)."""
    by_size = -(-rows // max(1, config.write_batch))
    return max(1, min(rows, max(by_size, 2 * config.ray_actors)))
