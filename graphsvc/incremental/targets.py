"""What a re-index embeds, one class per kind of collection, each with the same steps:
`pull` the inputs, put them in slot order (`in_slots`), `diff` them against the last
run's hashes, `estimate` (a dry run) or `embed` what changed.

- `ProductsTarget`: features + co-purchase graph → GraphSAGE, layer by layer, recomputing
  only what a change reaches (`graphsvc.incremental.propagation`).
- `MoviesTarget`: texts → a sentence encoder, the changed texts only.
- `GraphMoviesTarget`: texts → the sentence encoder for the changed texts, then the
  graph-aware movie model's layers (`graphsvc.models.movie_graph`) for the movies a change
  reaches: a changed text or a changed set of people reaches the movie and, layer by
  layer, the movies whose relation means read it (exact, no tolerance).

Where the model runs is the caller's `ModelRunner` (the job's Triton client today);
where the inputs are read, its `InputReads` (`LocalReads`: one stream on this process;
on Ray a read task per key range, `graphsvc.distributed.pull.RayReads`). The pulled
order does not matter: `plan_slots` matches the rows to last run's slots by key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import numpy as np
import pyarrow as pa

from graphsvc.graph import CSRGraph, EdgeIndexing
from graphsvc.graph.datasets import NodeGraph, load_memberships, load_node_graph, load_texts
from graphsvc.graph.relations import Memberships, MovieRelations
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

    def movie_layer_step(self, models: list[str], relations: MovieRelations, journal) -> "MovieLayerStep": ...


class InputReads(Protocol):
    """How a target's inputs are read from the store."""

    def node_graph(self, store: GraphStore, nodes: str, edges: str, features: str) -> NodeGraph:
        """`load_node_graph` with `build_graph=False`: the edges as positions."""

    def texts(self, store: GraphStore, collection: str, text: str, fallback: str) -> tuple[pa.Array, list[str], int]:
        """`load_texts`: keys, texts, the count of documents without one."""


class LocalReads:
    """The inputs read in this process, one stream per collection."""

    def node_graph(self, store: GraphStore, nodes: str, edges: str, features: str) -> NodeGraph:
        return load_node_graph(store, nodes, edges, features, build_graph=False)

    def texts(self, store: GraphStore, collection: str, text: str, fallback: str) -> tuple[pa.Array, list[str], int]:
        return load_texts(store, collection, text, fallback)


#: what a target reads with unless told otherwise
LOCAL_READS = LocalReads()


#: (layer, rows to compute, the layer's input for every movie) → those rows' outputs
MovieLayerStep = Callable[[int, np.ndarray, np.ndarray], np.ndarray]


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
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # more per-slot vectors written back beside
    text_space: np.ndarray | None = None  # per slot: text vectors to publish as their own index (graph-aware)


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

    def pull(self, store: GraphStore, reads: InputReads = LOCAL_READS) -> PulledProducts:
        data = reads.node_graph(store, self.collection, self.edges, self.features)
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

    def pull(self, store: GraphStore, reads: InputReads = LOCAL_READS) -> TextInputs:
        return TextInputs(*reads.texts(store, self.collection, self.text, self.fallback_text))

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


# ------------------------------------------------------------ movies, graph-aware


@dataclass(frozen=True)
class GraphMovieInputs:
    keys: pa.Array
    texts: list[str]
    relations: MovieRelations  # movies numbered by slot
    skipped: int
    links: dict[str, int]


@dataclass(frozen=True)
class PulledGraphMovies:
    keys: pa.Array
    texts: list[str]
    skipped: int
    names: tuple[str, ...]
    memberships: dict[str, Memberships]  # movies by pulled position

    def in_slots(self, plan: SlotPlan) -> GraphMovieInputs:
        position = np.empty(len(plan.order), np.int64)
        position[plan.order] = np.arange(len(plan.order))
        slotted = {name: Memberships(position[m.movies], m.vias) for name, m in self.memberships.items()}
        return GraphMovieInputs(self.keys.take(pa.array(plan.order)), [self.texts[i] for i in plan.order],
                                MovieRelations.build(self.names, slotted, len(plan.order)), self.skipped,
                                {name: int(len(m.movies)) for name, m in self.memberships.items()})


@dataclass(frozen=True)
class GraphMovieDiff(TextDiff):
    relations_changed: np.ndarray  # bool per slot: the movie's relation means read other movies, or other weights


class GraphMoviesTarget(MoviesTarget):
    """Movies, graph-aware: the sentence encoder, then `graph_model`'s layers over the
    movies' `relations` (edge collections to people), both served by the runner."""

    #: the model version is every served model's (a new text or graph model re-embeds all)
    all_versions = True

    def __init__(self, collection: str, text: str, fallback_text: str, model: str, graph_model: str,
                 layer_models: list[str], relations: tuple[str, ...]):
        super().__init__(collection, text, fallback_text, model)
        self.graph_model, self.layer_models, self.relations = graph_model, list(layer_models), tuple(relations)

    def model_names(self, runner: ModelRunner) -> list[str]:
        return [self.model, *self.layer_models]

    def pull(self, store: GraphStore, reads: InputReads = LOCAL_READS) -> PulledGraphMovies:
        keys, texts, skipped = reads.texts(store, self.collection, self.text, self.fallback_text)
        return PulledGraphMovies(keys, texts, skipped, self.relations,
                                 load_memberships(store, self.collection, keys, self.relations))

    def diff(self, inputs: GraphMovieInputs, snapshot: Snapshot | None, plan: SlotPlan) -> GraphMovieDiff:
        text = super().diff(TextInputs(inputs.keys, inputs.texts, inputs.skipped), snapshot, plan)
        existing = plan.old_slot >= 0
        # columns named by their slot of last run (new movies by a number no slot has)
        identity = np.where(existing, plan.old_slot, np.int64(1 << 62) + np.arange(len(plan.order)))
        against_old = inputs.relations.row_hashes(identity)
        old = carried(snapshot.array("relation_hash") if snapshot else None, plan)
        changed = existing & (against_old != old.astype(np.uint64))
        own = inputs.relations.row_hashes()
        return GraphMovieDiff({**text.hashes, "relation_hash": own},
                              {**text.counts, "relation_rows_changed": int(changed.sum()), "links": inputs.links},
                              text.texts_changed, changed)

    def _reach(self, inputs: GraphMovieInputs, diff: GraphMovieDiff, plan: SlotPlan, text_rows: np.ndarray
               ) -> np.ndarray:
        """Layer 0's rows: the movies whose text vector or relation means change."""
        return np.flatnonzero(inputs.relations.neighbours(text_rows) | diff.relations_changed | (plan.old_slot < 0))

    def estimate(self, inputs: GraphMovieInputs, diff: GraphMovieDiff, plan: SlotPlan, full: bool) -> dict:
        if full:
            return {"would_recompute": len(plan.order)}
        text_rows = np.flatnonzero(diff.texts_changed | (plan.old_slot < 0))
        rows, per_layer = self._reach(inputs, diff, plan, text_rows), []
        for _ in self.layer_models:
            per_layer.append(int(len(rows)))
            rows = np.flatnonzero(inputs.relations.neighbours(rows) | diff.relations_changed)
        return {"would_recompute": int(len(text_rows)), "would_recompute_layers": per_layer}

    def embed(self, inputs: GraphMovieInputs, diff: GraphMovieDiff, snapshot: Snapshot | None, plan: SlotPlan,
              full: bool, runner: ModelRunner, journal) -> EmbedResult:
        n = len(inputs.texts)
        previous = None if full or snapshot is None or snapshot.array("text_embedding") is None else snapshot
        layers = len(self.layer_models)

        def last_run(name: str) -> np.ndarray | None:
            array = previous.array(name) if previous is not None else None
            return carried(array, plan) if array is not None else None

        text_rows = np.arange(n) if previous is None else np.flatnonzero(diff.texts_changed | (plan.old_slot < 0))
        text = last_run("text_embedding")
        vectors = runner.text_step(journal)([inputs.texts[i] for i in text_rows])
        if vectors is not None:
            text = np.zeros((n, vectors.shape[1]), np.float32) if text is None else text
            text[text_rows] = vectors
        step = runner.movie_layer_step(self.layer_models, inputs.relations, journal)
        rows = np.arange(n) if previous is None else self._reach(inputs, diff, plan, text_rows)
        outputs, recomputed, layer_input, before = [], [int(len(text_rows))], text, None
        for layer in range(layers):
            name = "embedding" if layer == layers - 1 else f"layer{layer}"
            out = last_run(name)
            if layer == layers - 1 and out is not None:
                before = out[rows].copy()
            computed = step(layer, rows, layer_input) if len(rows) else None
            if computed is not None:
                out = np.zeros((n, computed.shape[1]), np.float32) if out is None else out
                out[rows] = computed
            outputs.append(out)
            recomputed.append(int(len(rows)))
            layer_input = out
            if layer < layers - 1:
                rows = np.arange(n) if previous is None else np.flatnonzero(
                    inputs.relations.neighbours(rows) | diff.relations_changed)
        embedding = outputs[-1]
        kept = plan.old_slot[rows] >= 0
        shift, written = moved(embedding, None if previous is None or before is None
                               else (rows[kept], before[kept]), plan)
        text_changed = previous is None or len(text_rows) > 0 or len(plan.removed) > 0
        arrays = {"text_embedding": text, "embedding": embedding,
                  **{f"layer{layer}": outputs[layer] for layer in range(layers - 1)}}
        return EmbedResult(embedding=embedding, predicted=None, shift=shift, written=written,
                           re_embedded=int(len(text_rows)), recomputed_per_layer=recomputed, scales=[], arrays=arrays,
                           columns={"text_embedding": text}, text_space=text if text_changed else None)
