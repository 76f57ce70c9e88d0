"""What a re-index embeds, one class per kind of collection, each with the same steps:
`pull` the inputs, put them in slot order (`in_slots`), `diff` them against the last
run's hashes, `estimate` (a dry run) or `embed` what changed.

- `ProductsTarget`: features + co-purchase graph → GraphSAGE, layer by layer, recomputing
  only what a change reaches (`graphsvc.incremental.propagation`).
- `MoviesTarget`: texts → a sentence encoder, the changed texts only.

Where the model runs is the caller's `ModelRunner` (the job's Triton client today).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np
import pyarrow as pa

from graphsvc.graph import CSRGraph, EdgeIndexing
from graphsvc.graph.datasets import load_node_graph, load_texts
from graphsvc.incremental.hashes import neighbour_hashes, row_hashes, text_hashes
from graphsvc.incremental.propagation import LayerStates, LayerStep, first_layer, moved, propagate, within_hops
from graphsvc.incremental.slots import SlotPlan, carried
from graphsvc.incremental.snapshot import Snapshot
from graphsvc.store.base import GraphStore

#: The texts' embeddings, one row per text in the order given (None for no texts).
TextStep = Callable[[Sequence[str]], "np.ndarray | None"]


class ModelRunner(Protocol):
    """Where a target's model runs; each step saves its finished batches in `journal`
    (a `graphsvc.runs.RunJournal`) so a rerun after a crash redoes none of them."""

    def layer_models(self) -> list[str]:
        """The per-layer models served for the GraphSAGE model, in layer order."""

    def layer_step(self, models: list[str], journal) -> LayerStep: ...

    def text_step(self, journal) -> TextStep: ...


@dataclass(frozen=True)
class Diff:
    """Tonight's inputs against the last run's, per slot."""

    hashes: dict[str, np.ndarray]  # input hashes by snapshot array name (the run's identity)
    counts: dict[str, int]  # what changed, for the summary


@dataclass(frozen=True)
class ProductDiff(Diff):
    features_changed: np.ndarray  # bool per slot (nodes that existed last run)
    neighbours_changed: np.ndarray  # bool per slot: a different set of neighbours


@dataclass(frozen=True)
class TextDiff(Diff):
    texts_changed: np.ndarray  # bool per slot (documents that existed last run)


@dataclass(frozen=True)
class EmbedResult:
    embedding: np.ndarray  # per slot
    predicted: np.ndarray | None  # per slot: the predicted category (products)
    shift: np.ndarray  # per slot: how far its unit vector moved since last run (inf: new, or a full run)
    written: np.ndarray  # slots whose embedding or prediction differs from last run's
    re_embedded: int
    recomputed_per_layer: list[int]
    scales: list[float]  # per layer: its typical input size, the next run's tolerance unit
    arrays: dict[str, np.ndarray]  # what the snapshot keeps, by name


# ------------------------------------------------------------------ products


@dataclass(frozen=True)
class ProductInputs:
    keys: pa.Array  # slot order
    features: np.ndarray  # [N, F], slot order
    graph: CSRGraph  # nodes numbered by slot
    dangling: int  # edges naming a document not in the collection


@dataclass(frozen=True)
class PulledProducts:
    keys: pa.Array  # as pulled
    features: np.ndarray
    edges: EdgeIndexing  # by pulled position
    dangling: int

    def in_slots(self, plan: SlotPlan) -> ProductInputs:
        return ProductInputs(self.keys.take(pa.array(plan.order)), self.features[plan.order],
                             slot_graph(self.edges, plan.order), self.dangling)


def slot_graph(edges: EdgeIndexing, order: np.ndarray) -> CSRGraph:
    """The co-purchase graph with the node pulled at position order[s] numbered s."""
    position = np.empty(len(order), np.int64)
    position[order] = np.arange(len(order))
    return CSRGraph.from_edges(position[edges.source], position[edges.target], len(order))


class ProductsTarget:
    """Products: GraphSAGE over features and co-purchases, one served model per layer."""

    name = "products"
    default_model = "graphsage"

    def __init__(self, collection: str, edges: str, features: str, tolerance: float):
        self.collection, self.edges, self.features, self.tolerance = collection, edges, features, tolerance

    def model_names(self, runner: ModelRunner) -> list[str]:
        return runner.layer_models()

    def pull(self, store: GraphStore) -> PulledProducts:
        data = load_node_graph(store, self.collection, self.edges, self.features, build_graph=False)
        return PulledProducts(data.keys, data.features, data.edge_positions, data.dangling_edges)

    def diff(self, inputs: ProductInputs, snapshot: Snapshot | None, plan: SlotPlan) -> ProductDiff:
        existing = plan.old_slot >= 0
        feature_hash = row_hashes(inputs.features)
        # neighbours named by their slot of last run (new nodes by a number no slot has)
        identity = np.where(existing, plan.old_slot, np.int64(1 << 62) + np.arange(len(plan.order)))
        against_old = neighbour_hashes(inputs.graph, identity.astype(np.uint64))
        own = neighbour_hashes(inputs.graph, np.arange(len(plan.order), dtype=np.uint64))
        old_features = carried(snapshot.array("feature_hash") if snapshot else None, plan)
        old_neighbours = carried(snapshot.array("neighbour_hash") if snapshot else None, plan)
        features_changed = existing & (feature_hash != old_features)
        neighbours_changed = existing & (against_old != old_neighbours)
        counts = {"features_changed": int(features_changed.sum()),
                  "neighbour_sets_changed": int(neighbours_changed.sum()),
                  "edges": int(inputs.graph.num_edges // 2), "dangling_edges": inputs.dangling}
        return ProductDiff({"feature_hash": feature_hash, "neighbour_hash": own}, counts, features_changed,
                           neighbours_changed)

    def estimate(self, inputs: ProductInputs, diff: ProductDiff, plan: SlotPlan, full: bool) -> dict:
        if full:
            return {"would_recompute": len(plan.order)}
        first = first_layer(inputs.graph, plan, diff.features_changed, diff.neighbours_changed)
        # the exact closure: every node within the model's number of layers of a change
        closure = within_hops(inputs.graph, first, 2)
        return {"would_recompute_layer0": int(first.sum()), "within_3_hops": int(closure.sum()),
                "note": "later layers recompute only nodes whose inputs move by more than the tolerance"}

    def embed(self, inputs: ProductInputs, diff: ProductDiff, snapshot: Snapshot | None, plan: SlotPlan,
              full: bool, runner: ModelRunner, journal) -> EmbedResult:
        models = runner.layer_models()
        layers = len(models)
        previous = None if full or snapshot is None else LayerStates.from_snapshot(snapshot, plan, layers)
        done = propagate(runner.layer_step(models, journal), layers, inputs.graph, inputs.features, plan,
                         diff.features_changed, diff.neighbours_changed, previous, self.tolerance)
        recomputed = done.recomputed
        return EmbedResult(
            embedding=done.states.outputs[-2], predicted=done.states.outputs[-1].argmax(axis=1), shift=done.shift,
            written=done.written, re_embedded=recomputed[-2] if len(recomputed) >= 2 else recomputed[-1],
            recomputed_per_layer=recomputed, scales=done.states.scales, arrays=done.states.arrays(),
        )


# -------------------------------------------------------------------- movies


@dataclass(frozen=True)
class TextInputs:
    keys: pa.Array
    texts: list[str]
    skipped: int  # documents without a text

    def in_slots(self, plan: SlotPlan) -> "TextInputs":
        return TextInputs(self.keys.take(pa.array(plan.order)), [self.texts[i] for i in plan.order], self.skipped)


class MoviesTarget:
    """Movies: a sentence encoder over each document's text (or its fallback)."""

    name = "movies"
    default_model = "sentence_encoder"

    def __init__(self, collection: str, text: str, fallback_text: str, model: str):
        self.collection, self.text, self.fallback_text, self.model = collection, text, fallback_text, model

    def model_names(self, runner: ModelRunner) -> list[str]:
        return [self.model]

    def pull(self, store: GraphStore) -> TextInputs:
        return TextInputs(*load_texts(store, self.collection, self.text, self.fallback_text))

    def diff(self, inputs: TextInputs, snapshot: Snapshot | None, plan: SlotPlan) -> TextDiff:
        text_hash = text_hashes(inputs.texts)
        old = carried(snapshot.array("text_hash") if snapshot else None, plan)
        changed = (plan.old_slot >= 0) & (text_hash != old)
        return TextDiff({"text_hash": text_hash},
                        {"texts_changed": int(changed.sum()), "skipped_without_text": inputs.skipped}, changed)

    def estimate(self, inputs: TextInputs, diff: TextDiff, plan: SlotPlan, full: bool) -> dict:
        if full:
            return {"would_recompute": len(plan.order)}
        return {"would_recompute": int(diff.texts_changed.sum() + len(plan.added))}

    def embed(self, inputs: TextInputs, diff: TextDiff, snapshot: Snapshot | None, plan: SlotPlan,
              full: bool, runner: ModelRunner, journal) -> EmbedResult:
        n = len(inputs.texts)
        rows = np.arange(n) if full else np.flatnonzero(diff.texts_changed | (plan.old_slot < 0))
        old = None if full or snapshot is None else snapshot.array("embedding")
        embedding = carried(old, plan) if old is not None else None
        before = embedding[rows] if embedding is not None else None  # last run's, for what moved
        vectors = runner.text_step(journal)([inputs.texts[i] for i in rows])
        if vectors is not None:
            if embedding is None:
                embedding = np.zeros((n, vectors.shape[1]), np.float32)
            embedding[rows] = vectors
        kept = plan.old_slot[rows] >= 0
        shift, changed = moved(embedding, None if full or before is None else (rows[kept], before[kept]), plan)
        return EmbedResult(embedding=embedding, predicted=None, shift=shift, written=changed, re_embedded=len(rows),
                           recomputed_per_layer=[int(len(rows))], scales=[], arrays={"embedding": embedding})
