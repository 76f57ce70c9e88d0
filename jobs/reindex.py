"""`jobs reindex`: nightly re-indexing that costs in proportion to what changed.

Recipe: lock → pull the inputs (products: features + co-purchases; movies: texts) →
hash them per document and compare with the last run's snapshot → recompute only what
depends on a change (products: layer by layer, the nodes whose layer inputs moved;
movies: the changed texts) through Triton, batch by batch into a journal → update the
FAISS index in place (or rebuild it) → refresh the `similar` lists that can have
changed → write back the rows that changed, chunk by chunk → publish the next index
version → commit the new snapshot.

Crash safety: every finished batch, the index step, each write-back chunk and the
publish are recorded in a journal directory named by a fingerprint of the plan (the
last snapshot + tonight's input hashes), so a rerun after a crash with the same inputs
redoes none of them; the snapshot is replaced only at the end, in one rename. Readers
only ever see complete index versions (`graphsvc.index.artifacts.publish`).

Exactness (products): a node's layer-l output is recomputed when its own input or the
mean of its neighbours' inputs moved by more than `tolerance` × the layer's typical
input size (mean of per-node max-abs), or its neighbour set changed. Changes below
that are not propagated, but they accumulate per node and layer (`drift`) until they
pass the tolerance, so skipped changes never add up unnoticed across nights. Layer 0
is always exact: every node with a changed feature, neighbour set or a neighbour with
changed features is recomputed. `tolerance=0` recomputes the exact closure.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from graphsvc.errors import ConfigError, IndexCorrupt, IndexNotFound, ModelRepositoryError, TritonInferenceError
from graphsvc.graph import CSRGraph, NeighbourMean
from graphsvc.graph.datasets import load_node_graph, load_texts
from graphsvc.incremental import (
    SlotPlan,
    Snapshot,
    carried,
    fingerprint,
    mean_change,
    neighbour_hashes,
    neighbour_mean_rows,
    plan_slots,
    revisions_by_key,
    row_hashes,
    text_hashes,
)
from graphsvc.index.artifacts import current_version, load_version, publish
from graphsvc.index.faiss_index import AUTO_FLAT_MAX, VectorIndex, l2_normalise
from graphsvc.index.similar import embedding_array, index_with_neighbours, refresh_similar, similar_array
from graphsvc.models.graphsage import LAYER_NEIGHBOURS, LAYER_OUT, LAYER_SELF, layer_model_name
from graphsvc.runs import RunJournal, RunLock, kill_point
from graphsvc.runs.timing import PhaseTimer
from graphsvc.store.base import GraphStore
from graphsvc.triton.client import TritonClient

TARGETS = ("products", "movies")
STATE_DIR = ".reindex"
INPUT_HASHES = 2  # the version of the input hashes a snapshot holds (graphsvc.incremental)


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
    #: propagation tolerance, relative to the typical size of a layer's input (see module doc)
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

    def resolved(self) -> "ReindexConfig":
        if self.target not in TARGETS:
            raise ConfigError(f"unknown reindex target '{self.target}' (products or movies)")
        if self.tolerance < 0 or self.similar_tolerance < 0:
            raise ConfigError("tolerances must not be negative")
        return replace(
            self,
            collection=self.collection or self.target,
            model=self.model or ("graphsage" if self.target == "products" else "sentence_encoder"),
        )


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
    if config.dry_run:
        return _Run(store, triton, Path(index_dir), directory, config, on_progress).run()
    with RunLock(directory / "LOCK", stale_after=config.stale_after) as lock:
        summary = _Run(store, triton, Path(index_dir), directory, config, on_progress).run()
        if lock.took_over:
            summary["lock_taken_over_from"] = lock.took_over
        return summary


class _Run:
    def __init__(self, store, triton, index_dir: Path, directory: Path, config: ReindexConfig, on_progress):
        self.store, self.triton, self.index_dir, self.dir, self.config = store, triton, index_dir, directory, config
        self.on_progress = on_progress
        self.timer = PhaseTimer()
        self.summary: dict = {"collection": config.collection, "target": config.target}

    # ------------------------------------------------------------------ recipe
    def run(self) -> dict:
        config = self.config
        snapshot = None if config.full else Snapshot.load(self.dir)
        with self.timer("pull"):
            inputs = self._pull_products() if config.target == "products" else self._pull_movies()
        plan = plan_slots(snapshot.keys if snapshot else None, inputs["keys"])
        with self.timer("diff"):
            diff = self._diff(snapshot, plan, inputs)
        model_version = self._model_version() if self.triton is not None and not config.dry_run else None
        full, reason = self._full_reason(snapshot, model_version)
        self.summary.update(
            mode="full" if full else "incremental", full_reason=reason, documents=len(plan.order),
            new=int(len(plan.added)), removed=int(len(plan.removed)), **diff["counts"],
        )
        if config.dry_run:
            self.summary.update(self._dry_run_estimate(inputs, diff, plan, full))
            self.summary["seconds"] = self.timer.summary()
            return self.summary
        if self.triton is None:
            raise ConfigError("reindex needs a Triton client unless --dry-run")

        run_id = fingerprint(snapshot.id if snapshot else None, inputs["keys"].take(pa.array(plan.order)),
                             diff["hashes"], model_version, full, self._settings())
        journal = RunJournal(self.dir / f"run-{run_id}")
        for entry in self.dir.glob("run-*"):  # plans of other inputs are stale now
            if entry != journal.directory:
                RunJournal(entry).remove()
        self.summary["run_id"] = run_id

        self.store.release()  # the service may read the store while we compute; the write-back reopens it
        with self.timer("embed"):
            if config.target == "products":
                result = self._embed_products(snapshot, plan, inputs, diff, full, journal)
            else:
                result = self._embed_movies(snapshot, plan, inputs, diff, full, journal)
        result["written"] = _union(result["written"], np.flatnonzero(self.rewritten))
        if not full and not (result["shift"] > 0).any() and not len(plan.removed) and not len(plan.added):
            # no vector moved: the published index stands; rewrite only what others replaced
            lists = {**_carried_similar(snapshot, plan, 2 * self.config.top_k),
                     "similar_changed": np.zeros(0, np.int64)}
            with self.timer("write_back"):
                written = self._write_back(plan, inputs["keys"], result, lists, False, journal)
            result["lists"] = lists
            self._commit(snapshot, plan, inputs, diff, result, model_version,
                         index_version=snapshot.meta["index_version"], journal=journal)
            self.summary.update(mode="unchanged", index_version=snapshot.meta["index_version"], written=written,
                                re_embedded=int(result["re_embedded"]),
                                batches={"computed": journal.computed, "reused": journal.reused})
            self.summary["seconds"] = self.timer.summary()
            return self.summary

        with self.timer("index"):
            index, lists, index_info = self._index(snapshot, plan, result, full, journal)
        result["lists"] = lists

        def write_back():
            with self.timer("write_back"):
                return self._write_back(plan, inputs["keys"], result, lists, full, journal)

        # the write-back (the store's work) runs beside the publish and the snapshot's
        # arrays (file work); the snapshot is committed once both are done
        writer = _Beside(write_back, "reindex-write-back")
        try:
            with self.timer("publish"):
                version = self._publish(index, plan, inputs["keys"], model_version, index_info, journal)
            with self.timer("commit"):
                staged = self._stage(snapshot, plan, diff, result)
        except BaseException:
            with contextlib.suppress(BaseException):  # the first error is the one to report
                writer.result()
            raise
        written = writer.result()
        with self.timer("commit"):
            self._commit(snapshot, plan, inputs, diff, result, model_version, version, journal, index_info,
                         staged=staged)
        self.summary.update(
            re_embedded=int(result["re_embedded"]), moved=int((result["shift"] > 0).sum()),
            moved_far=index_info["far_movers"], similar_searched=index_info["similar_searched"],
            similar_changed=index_info["similar_changed"],
            written=written, index_version=version, index=index_info,
            batches={"computed": journal.computed, "reused": journal.reused},
        )
        self.summary["seconds"] = self.timer.summary()
        return self.summary

    def _settings(self) -> dict:
        c = self.config
        return {"top_k": c.top_k, "tolerance": c.tolerance, "similar_tolerance": c.similar_tolerance,
                "layer_batch_size": c.layer_batch_size, "text_batch_size": c.text_batch_size, "model": c.model,
                "rebuild_share": c.rebuild_share, "input_hashes": INPUT_HASHES}

    def _model_version(self) -> str:
        models = self._layer_models() if self.config.target == "products" else [self.config.model]
        self.triton.wait_ready(timeout=self.config.ready_timeout, models=models)
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
        for name in ("top_k", "model", "input_hashes"):  # what the stored windows, states, hashes depend on
            if before.get(name) != self._settings()[name]:
                return True, f"{name} changed ({before.get(name)} → {self._settings()[name]})"
        return False, None

    # -------------------------------------------------------------------- pull
    def _pull_products(self) -> dict:
        c = self.config
        data = load_node_graph(self.store, c.collection, c.edges, c.features, build_graph=False)
        return {"keys": data.keys, "features": data.features, "edges": data.edge_positions,
                "dangling": data.dangling_edges}

    def _pull_movies(self) -> dict:
        c = self.config
        keys, texts, skipped = load_texts(self.store, c.collection, c.text, c.fallback_text)
        return {"keys": keys, "texts": texts, "skipped": skipped}

    # -------------------------------------------------------------------- diff
    def _diff(self, snapshot: Snapshot | None, plan: SlotPlan, inputs: dict) -> dict:
        existing = plan.old_slot >= 0
        revisions = revisions_by_key(self.store, self.config.collection, inputs["keys"].take(pa.array(plan.order)))
        # documents replaced by someone else since our write-back: a replace drops what we wrote
        rewritten = np.zeros(len(plan.order), bool)
        if revisions is not None and snapshot is not None and snapshot.revisions is not None:
            present = np.flatnonzero(existing)
            before = snapshot.revisions.take(pa.array(plan.old_slot[present]))
            differs = pc.fill_null(pc.not_equal(revisions.take(pa.array(present)), before), True)
            rewritten[present] = differs.to_numpy(zero_copy_only=False)
        self.rewritten = rewritten
        if self.config.target == "products":
            features = inputs["features"][plan.order]
            graph = _slot_graph(inputs["edges"], plan.order)
            inputs["slot_features"], inputs["slot_graph"] = features, graph
            feature_hash = row_hashes(features)
            # neighbours named by their slot of last run (new nodes by a number no slot has)
            identity = np.where(existing, plan.old_slot, np.int64(1 << 62) + np.arange(len(plan.order)))
            against_old = neighbour_hashes(graph, identity.astype(np.uint64))
            own = neighbour_hashes(graph, np.arange(len(plan.order), dtype=np.uint64))
            old_features = carried(snapshot.array("feature_hash") if snapshot else None, plan)
            old_neighbours = carried(snapshot.array("neighbour_hash") if snapshot else None, plan)
            features_changed = existing & (feature_hash != old_features)
            neighbours_changed = existing & (against_old != old_neighbours)
            return {
                "features_changed": features_changed, "neighbours_changed": neighbours_changed,
                "hashes": [feature_hash, own], "arrays": {"feature_hash": feature_hash, "neighbour_hash": own},
                "counts": {"rewritten_documents": int(rewritten.sum()), "features_changed": int(features_changed.sum()),
                           "neighbour_sets_changed": int(neighbours_changed.sum()),
                           "edges": int(graph.num_edges // 2), "dangling_edges": inputs["dangling"]},
            }
        texts = [inputs["texts"][i] for i in plan.order]
        inputs["slot_texts"] = texts
        text_hash = text_hashes(texts)
        old = carried(snapshot.array("text_hash") if snapshot else None, plan)
        changed = existing & (text_hash != old)
        return {"texts_changed": changed, "hashes": [text_hash], "arrays": {"text_hash": text_hash},
                "counts": {"rewritten_documents": int(rewritten.sum()), "texts_changed": int(changed.sum()),
                           "skipped_without_text": inputs["skipped"]}}

    def _dry_run_estimate(self, inputs: dict, diff: dict, plan: SlotPlan, full: bool) -> dict:
        n = len(plan.order)
        if full:
            return {"would_recompute": n}
        if self.config.target == "movies":
            return {"would_recompute": int(diff["texts_changed"].sum() + len(plan.added))}
        graph = inputs["slot_graph"]
        first = _first_layer(graph, diff, plan)
        # the exact closure: every node within the model's number of layers of a change
        closure = first.copy()
        for _ in range(2):
            reached = np.zeros(n, bool)
            rows = np.flatnonzero(closure)
            if len(rows):
                reached[graph.rows(rows)[1]] = True
            closure |= reached
        return {"would_recompute_layer0": int(first.sum()), "within_3_hops": int(closure.sum()),
                "note": "later layers recompute only nodes whose inputs move by more than the tolerance"}

    # ------------------------------------------------------------- embedding
    def _layer_models(self) -> list[str]:
        available = {status.name for status in self.triton.models()}
        layers = []
        while layer_model_name(self.config.model, len(layers)) in available:
            layers.append(layer_model_name(self.config.model, len(layers)))
        if not layers:
            raise ModelRepositoryError(
                f"Triton at {self.triton.url} serves no '{layer_model_name(self.config.model, 0)}' — "
                "export the per-layer models with 'jobs export-models'"
            )
        return layers

    def _apply_layer(self, model: str, layer: int, rows: np.ndarray, inputs: np.ndarray, graph: CSRGraph,
                     journal: RunJournal) -> np.ndarray | None:
        """Layer `layer` for `rows` through Triton, batch by batch; finished batches come
        from the journal."""
        size = self.config.layer_batch_size
        chunks = [rows[s : s + size] for s in range(0, len(rows), size)]
        results: list[np.ndarray | None] = [journal.load(f"L{layer}-B{b}") for b in range(len(chunks))]
        todo = [b for b, r in enumerate(results) if r is None]
        # almost all of the graph: one product for every node; else only the rows' edges
        means = NeighbourMean(graph)(inputs) if todo and len(rows) > 0.9 * graph.num_nodes else None

        def requests():
            for b in todo:
                chunk = chunks[b]
                neighbours = means[chunk] if means is not None else neighbour_mean_rows(graph, chunk, inputs)
                yield {LAYER_SELF: inputs[chunk], LAYER_NEIGHBOURS: neighbours}

        for b, result in zip(todo, self.triton.infer_many(model, requests(), max_in_flight=self.config.max_in_flight)):
            out = result[LAYER_OUT]
            if out.shape[0] != len(chunks[b]):
                raise TritonInferenceError(f"model '{model}' returned {out.shape[0]} rows for {len(chunks[b])} nodes")
            journal.save(f"L{layer}-B{b}", out)
            results[b] = out
            kill_point("embed", journal.computed)
            if self.on_progress:
                self.on_progress(len(chunks[b]))
        return np.concatenate(results) if results else None

    def _embed_products(self, snapshot, plan: SlotPlan, inputs: dict, diff: dict, full: bool,
                        journal: RunJournal) -> dict:
        graph, features = inputs["slot_graph"], inputs["slot_features"]
        models = self._layer_models()
        n, layers = len(plan.order), len(models)
        old = [None if full or snapshot is None else snapshot.array(f"h{layer + 1}") for layer in range(layers)]
        full = full or any(o is None for o in old)  # (a snapshot without hidden states: nothing to build on)
        outputs = [None if full else carried(old[layer], plan, reuse=True) for layer in range(layers)]
        drift = [carried(None if full else snapshot.array(f"drift{layer}"), plan, reuse=True)
                 for layer in range(layers)]
        del old
        scales = (snapshot.meta.get("scales") if not full else None) or [0.0] * layers
        structural = ~(plan.old_slot >= 0)
        if not full:
            structural = structural | diff["neighbours_changed"]
        recomputed = []
        shift, written = np.full(n, np.inf, np.float32), np.arange(n)
        if not full:
            shift, written = np.zeros(n, np.float32), [np.flatnonzero(plan.old_slot < 0)]
        layer_inputs = features
        need = np.ones(n, bool) if full else _first_layer(graph, diff, plan)
        for layer, model in enumerate(models):
            rows = np.flatnonzero(need)
            out = self._apply_layer(model, layer, rows, layer_inputs, graph, journal)
            drift[layer][rows] = 0.0
            recomputed.append(int(len(rows)))
            if full:  # every row, in order
                outputs[layer] = layer_inputs = out
                continue
            before = outputs[layer][rows]  # a copy (fancy indexing)
            if len(rows):
                outputs[layer][rows] = out
            layer_inputs = outputs[layer]
            # only recomputed rows can differ from last run's: which did, and by how much
            kept = plan.old_slot[rows] >= 0
            existing = rows[kept]
            if layer == layers - 2 and len(existing):  # the embedding: how far each unit vector moved
                shift[existing] = _unit_shift(out[kept], before[kept])
            moved = _max_abs_change(out, before, kept)
            if layer >= layers - 2:
                written.append(existing[moved > 0])
            if layer + 1 == layers:
                break
            # by how much each node's next-layer input moved: its own row, and the mean of
            # its neighbours' rows (new nodes need no delta: their neighbours are structural)
            change = np.zeros(n, np.float32)
            if len(existing):
                change[existing] = moved
                affected, moved_mean = mean_change(graph, existing, moved)
                change[affected] += moved_mean
            drift[layer + 1] += change
            need = structural | (drift[layer + 1] > self.config.tolerance * scales[layer + 1])
        # typical input size of each layer, for the next run's thresholds
        self.scales = [_typical_size(x) for x in [features] + outputs[:-1]]
        self.summary["recomputed_per_layer"] = recomputed
        embedding, logits = outputs[-2], outputs[-1]
        if not full:
            shift[plan.old_slot < 0] = np.inf
            written = _union(*written)
        return {
            "embedding": embedding, "predicted": logits.argmax(axis=1), "shift": shift, "written": written,
            "re_embedded": recomputed[-2] if len(recomputed) >= 2 else recomputed[-1],
            "arrays": {**{f"h{i + 1}": outputs[i] for i in range(layers)},
                       **{f"drift{i}": drift[i] for i in range(layers)}},
        }

    def _embed_movies(self, snapshot, plan: SlotPlan, inputs: dict, diff: dict, full: bool,
                      journal: RunJournal) -> dict:
        from graphsvc.models.text import EMBEDDING, Tokenizer

        texts = inputs["slot_texts"]
        n = len(texts)
        rows = np.arange(n) if full else np.flatnonzero(diff["texts_changed"] | (plan.old_slot < 0))
        old = None if full or snapshot is None else snapshot.array("embedding")
        embedding = carried(old, plan) if old is not None else None
        before = embedding[rows] if embedding is not None else None  # last run's, for what moved
        tokenizer = Tokenizer()
        # length-sorted batches: each request pads only to its own longest sentence
        order = rows[np.argsort(tokenizer.lengths([texts[i] for i in rows]), kind="stable")] if len(rows) else rows
        size = self.config.text_batch_size
        chunks = [order[s : s + size] for s in range(0, len(order), size)]
        results = [journal.load(f"T-B{b}") for b in range(len(chunks))]
        todo = [b for b, r in enumerate(results) if r is None]
        requests = (tokenizer.request([texts[i] for i in chunks[b]]) for b in todo)
        for b, result in zip(todo, self.triton.infer_many(self.config.model, requests,
                                                           max_in_flight=self.config.max_in_flight)):
            vectors = result[EMBEDDING]
            if vectors.shape[0] != len(chunks[b]):
                raise TritonInferenceError(f"model '{self.config.model}' returned {vectors.shape[0]} vectors "
                                           f"for {len(chunks[b])} texts")
            journal.save(f"T-B{b}", vectors)
            results[b] = vectors
            kill_point("embed", journal.computed)
            if self.on_progress:
                self.on_progress(len(chunks[b]))
        for chunk, vectors in zip(chunks, results):
            if embedding is None:
                embedding = np.zeros((n, vectors.shape[1]), np.float32)
            embedding[chunk] = vectors
        self.scales = []
        self.summary["recomputed_per_layer"] = [int(len(rows))]
        kept = plan.old_slot[rows] >= 0
        shift, changed = _moved(embedding, None if full or before is None else (rows[kept], before[kept]), plan)
        return {"embedding": embedding, "predicted": None, "shift": shift, "written": changed,
                "re_embedded": len(rows), "arrays": {"embedding": embedding}}

    # ------------------------------------------------------------------ index
    def _index(self, snapshot, plan: SlotPlan, result: dict, full: bool, journal: RunJournal):
        """The updated (or rebuilt) index and every row's similar window."""
        if journal.done("indexed"):
            info = journal.value("indexed")
            index = VectorIndex.load(journal.directory / "index.faiss", metric="cosine")
            lists = {name: np.load(journal.directory / f"{name}.npy") for name in _LIST_ARRAYS
                     if (journal.directory / f"{name}.npy").exists()}
            return index, lists, info
        embedding, shift, k = result["embedding"], result["shift"], self.config.top_k
        window = 2 * k
        n = len(embedding)
        far = int((shift > self.config.similar_tolerance).sum())
        index, reason, refresh = None, None, False
        if full:
            reason = "full run"
        elif far + len(plan.removed) > self.config.rebuild_share * max(n, 1):
            reason = (f"{far + len(plan.removed)} of {n} vectors moved far or were removed "
                      f"(> {self.config.rebuild_share:.0%}: centroids trained on the old vectors would degrade)")
        else:
            index, reason = self._published_index(snapshot)
            trained = snapshot.meta.get("trained_count") or n
            if index is not None and not index.supports_updates:
                if n < AUTO_FLAT_MAX:  # exact search: a copy of the vectors, no training
                    index, reason, refresh = VectorIndex.build(embedding, kind="flat"), "flat: rebuilt by copy", True
                else:
                    index, reason = None, f"{n} vectors: too many for a {index.kind} index"
            elif index is not None and (n < AUTO_FLAT_MAX or n > 2 * trained or n < trained // 2):
                index, reason = None, f"{n} vectors: outside the range the IVF index was trained for ({trained})"
            elif index is not None:
                moved = np.flatnonzero(shift > 0)
                remove = _union(plan.removed, plan.old_slot[plan.relocated],
                                moved[(plan.old_slot[moved] >= 0) & (plan.old_slot[moved] == moved)])
                add = _union(plan.relocated, moved, plan.added)
                index.update(remove, add, embedding[add])
                reason, refresh = f"in place: {len(remove)} vectors removed, {len(add)} added by id", True
        if refresh:
            lists = _carried_similar(snapshot, plan, window)
            outcome = refresh_similar(index, l2_normalise(embedding), lists["similar_ids"], lists["similar_scores"],
                                      lists["similar_boundary"], shift, k, self.config.similar_tolerance,
                                      score_tolerance=min(1e-3, self.config.similar_tolerance))
            searched, changed = len(outcome["searched"]), len(outcome["changed"])
            lists["similar_changed"] = outcome["changed"]
            info = {"action": "updated", "reason": reason, "kind": index.kind,
                    "calibration": snapshot.meta.get("calibration"),
                    "trained_count": snapshot.meta.get("trained_count")}
        else:
            indexed = index_with_neighbours(embedding, k, lists=window)
            index, calibration, ids, scores = indexed.index, indexed.calibration, indexed.ids, indexed.scores
            if ids.shape[1] < window:
                pad = window - ids.shape[1]
                ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
                scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
            boundary = np.where(ids[:, -1] >= 0, scores[:, -1], -np.inf).astype(np.float32)
            lists = {"similar_ids": ids, "similar_scores": scores, "similar_boundary": boundary}
            searched, changed = n, n
            info = {"action": "rebuilt", "reason": reason, "kind": index.kind, "calibration": calibration,
                    "trained_count": n}
        info.update(similar_searched=int(searched), similar_changed=int(changed), far_movers=far)
        index.save(journal.directory / ".index.faiss")
        os.replace(journal.directory / ".index.faiss", journal.directory / "index.faiss")
        for name in _LIST_ARRAYS:
            if name in lists:
                np.save(journal.directory / f"{name}.npy", lists[name])
        journal.mark("indexed", info)
        return index, lists, info

    def _published_index(self, snapshot) -> tuple[VectorIndex | None, str | None]:
        version = snapshot.meta.get("index_version")
        try:
            if current_version(self.index_dir, self.config.collection) != version:
                return None, f"the published version is not v{version} of the last run"
            return load_version(self.index_dir, self.config.collection, version).index, None
        except (IndexCorrupt, IndexNotFound) as exc:
            return None, f"the published index cannot be read ({exc})"

    # ------------------------------------------------------------- write back
    def _write_back(self, plan: SlotPlan, pulled_keys: pa.Array, result: dict, lists: dict, full: bool,
                    journal: RunJournal) -> int:
        """The rows whose embedding, prediction or top-k list changed, chunk by chunk."""
        keys = pulled_keys.take(pa.array(plan.order))
        ids, scores, k = lists["similar_ids"], lists["similar_scores"], self.config.top_k
        rows = (np.arange(len(plan.order)) if full or "similar_changed" not in lists
                else _union(result["written"], lists["similar_changed"], plan.added))
        size = self.config.write_batch
        for number, start in enumerate(range(0, len(rows), size)):
            if journal.done(f"write-{number}"):
                continue
            chunk = rows[start : start + size]
            columns = {
                "_key": keys.take(pa.array(chunk)),
                "embedding": embedding_array(result["embedding"][chunk]),
                "similar": similar_array(keys, ids[chunk, :k], scores[chunk, :k]),
            }
            if result["predicted"] is not None:
                columns["predicted_category"] = pa.array(result["predicted"][chunk])
            self.store.update_attributes(self.config.collection, pa.table(columns))
            journal.mark(f"write-{number}", {"rows": int(len(chunk))})
            kill_point("write_back", number + 1)
        return int(len(rows))

    def _publish(self, index: VectorIndex, plan: SlotPlan, pulled_keys: pa.Array, model_version, info: dict,
                 journal: RunJournal) -> int:
        if journal.done("published"):
            return journal.value("published")["version"]
        kill_point("publish")
        manifest = publish(
            self.index_dir, self.config.collection, index, pulled_keys.take(pa.array(plan.order)),
            model={"name": self.config.model, "version": model_version},
            extra={"job": "reindex", "top_k": self.config.top_k, "calibration": info.get("calibration"),
                   "index_update": info["action"], "run_id": self.summary["run_id"]},
            keep=self.config.keep, index_file=journal.directory / "index.faiss",
        )
        journal.mark("published", {"version": manifest.version})
        kill_point("published")
        return manifest.version

    def _stage(self, snapshot, plan, diff, result) -> Path:
        """The snapshot's arrays, written (durably) where no run reads them yet."""
        arrays = {**diff["arrays"], **result["arrays"]}
        lists = result.get("lists") or _carried_similar(snapshot, plan, 2 * self.config.top_k)
        arrays.update({name: lists[name] for name in _LIST_ARRAYS if name != "similar_changed"})
        return Snapshot.stage(self.dir, arrays)

    def _commit(self, snapshot, plan, inputs, diff, result, model_version, index_version, journal, info=None,
                staged: Path | None = None) -> None:
        staged = staged or self._stage(snapshot, plan, diff, result)
        previous = snapshot.meta if snapshot else {}
        info = info or {}
        meta = {
            "collection": self.config.collection, "target": self.config.target, "model_version": model_version,
            "settings": self._settings(), "index_version": index_version, "scales": self.scales,
            "calibration": info.get("calibration", previous.get("calibration")),
            "trained_count": info.get("trained_count", previous.get("trained_count")),
            "run_id": self.summary.get("run_id"), "finished_at": time.time(),
        }
        keys = inputs["keys"].take(pa.array(plan.order))
        # revisions as they are after our write-back (on ArangoDB it changes them too)
        Snapshot.finish(staged, meta, keys, revisions_by_key(self.store, self.config.collection, keys))
        self.store.put_state(f"reindex:{self.config.collection}", {
            "run_id": meta["run_id"], "index_version": index_version, "finished_at": meta["finished_at"],
        })
        journal.remove()


# ----------------------------------------------------------------- helpers


class _Beside:
    """`fn()` in a thread of its own; `result()` waits for it and returns its value or
    raises what it raised."""

    def __init__(self, fn: Callable[[], object], name: str):
        self._value, self._error = None, None

        def target():
            try:
                self._value = fn()
            except BaseException as exc:  # handed to result()
                self._error = exc

        self._thread = threading.Thread(target=target, name=name, daemon=True)
        self._thread.start()

    def result(self):
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def _slot_graph(edges, order: np.ndarray) -> CSRGraph:
    """The co-purchase graph with the node pulled at position order[s] numbered s."""
    position = np.empty(len(order), np.int64)
    position[order] = np.arange(len(order))
    return CSRGraph.from_edges(position[edges.source], position[edges.target], len(order))


def _first_layer(graph: CSRGraph, diff: dict, plan: SlotPlan) -> np.ndarray:
    """Nodes whose layer-0 output depends on a change: new nodes, changed features or
    neighbour sets, and the neighbours of nodes with changed features (exact)."""
    need = (plan.old_slot < 0) | diff["features_changed"] | diff["neighbours_changed"]
    changed = np.flatnonzero(diff["features_changed"] | (plan.old_slot < 0))
    if len(changed):
        need[graph.rows(changed)[1]] = True
    return need


def _moved(now: np.ndarray, recomputed: tuple | None, plan: SlotPlan) -> tuple[np.ndarray, np.ndarray]:
    """From the rows recomputed tonight that existed last run and their values before
    (None: a full run, every row new): how far each row's unit vector moved (L2; inf for
    new rows) and the rows that differ from last run's (new rows included). Rows not
    recomputed hold last run's values, so only recomputed rows are compared."""
    n = len(now)
    if recomputed is None:
        return np.full(n, np.inf, np.float32), np.arange(n)
    existing, before = recomputed
    differs = (now[existing] != before).any(axis=1)
    rows = existing[differs]
    shift = np.zeros(n, np.float32)
    shift[rows] = _unit_shift(now[rows], before[differs])
    new = plan.old_slot < 0
    shift[new] = np.inf
    return shift, _union(rows, np.flatnonzero(new))


def _unit_shift(now: np.ndarray, before: np.ndarray) -> np.ndarray:
    """Per row, how far its unit vector moved (L2): a bound on the change of any cosine."""
    return np.linalg.norm(l2_normalise(now) - l2_normalise(before), axis=1)


def _union(*parts: np.ndarray) -> np.ndarray:
    """The sorted distinct non-negative ids in any of `parts` (a mask, not a sort)."""
    parts = [np.asarray(p, np.int64) for p in parts if len(p)]
    if not parts:
        return np.zeros(0, np.int64)
    mask = np.zeros(max(int(p.max()) for p in parts) + 1, bool)
    for p in parts:
        mask[p] = True
    return np.flatnonzero(mask)


def _max_abs_change(now: np.ndarray, before: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Per kept row, the largest absolute change of any column (`before` is overwritten)."""
    if not kept.any():
        return np.zeros(int(kept.sum()), np.float32)
    np.subtract(now, before, out=before)
    np.abs(before, out=before)
    return before.max(axis=1)[kept]


def _typical_size(x: np.ndarray, sample: int = 32_768) -> float:
    """Mean per-row max-abs of a layer's input, over an even sample of its rows (a scale
    for the propagation tolerance, not an exact figure)."""
    if not len(x):
        return 0.0
    rows = x[:: -(-len(x) // sample)]  # at most `sample` rows, evenly spaced
    return float(np.maximum(rows.max(axis=1), -rows.min(axis=1)).mean())


_LIST_ARRAYS = ("similar_ids", "similar_scores", "similar_boundary", "similar_changed")


def _carried_similar(snapshot, plan: SlotPlan, window: int) -> dict[str, np.ndarray]:
    """Last run's similar windows in tonight's slots, ids renumbered; entries naming a
    removed document are dropped. Without them (or of another width), every row is new."""
    n = len(plan.order)
    old_ids = snapshot.array("similar_ids") if snapshot else None
    if old_ids is None or old_ids.shape[1] != window:
        return {"similar_ids": np.full((n, window), -1, np.int64),
                "similar_scores": np.full((n, window), -np.inf, np.float32),
                "similar_boundary": np.full(n, np.inf, np.float32)}
    ids = carried(old_ids, plan, fill=-1)
    valid = ids >= 0
    ids = np.where(valid, plan.new_slot_of_old[np.where(valid, ids, 0)], -1)
    scores = np.where(ids >= 0, carried(snapshot.array("similar_scores"), plan, fill=-np.inf), -np.inf)
    boundary = carried(snapshot.array("similar_boundary"), plan, fill=np.inf).astype(np.float32)
    return {"similar_ids": ids, "similar_scores": scores.astype(np.float32), "similar_boundary": boundary}
