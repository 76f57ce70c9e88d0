"""Change propagation through a layer-wise model with mean aggregation (GraphSAGE): which
nodes' layer outputs must be recomputed after some inputs changed, and how far the rest
may have drifted.

A node's layer-l output is recomputed when its own input or the mean of its neighbours'
inputs moved by more than `tolerance` × the layer's typical input size (mean of per-node
max-abs), or its neighbour set changed. Changes below that are not propagated, but they
accumulate per node and layer (`drift`) until they pass the tolerance, so skipped
changes never add up unnoticed across runs. Layer 0 is always exact: every node with a
changed feature, neighbour set or a neighbour with changed features is recomputed.
`tolerance=0` recomputes the exact closure.

The model itself is a parameter (`LayerStep`): this module decides which rows to
recompute, not where or how a layer runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from graphsvc.graph import CSRGraph
from graphsvc.incremental.slots import SlotPlan, carried, union_ids
from graphsvc.incremental.snapshot import Snapshot
from graphsvc.index.faiss_index import l2_normalise

#: Layer `layer` applied to `rows`, given every node's input to that layer and the graph:
#: the rows' outputs in the order of `rows` (None for no rows).
LayerStep = Callable[[int, np.ndarray, np.ndarray, CSRGraph], "np.ndarray | None"]


def mean_change(graph: CSRGraph, changed: np.ndarray, moved: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """When rows `changed` moved by `moved` (each row's max-abs change), a bound on how far
    (max abs) the neighbour mean of every node moved: (affected nodes, bound). The bound
    is the mean over a node's neighbours of their max-abs changes — exact when one
    neighbour moved, never below the true change (triangle inequality) — and costs one
    sparse product with a single column instead of one per dimension."""
    changed = np.asarray(changed, np.int64)
    if len(changed) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    per_node = np.zeros(graph.num_nodes, np.float32)
    per_node[changed] = moved
    degrees = graph.degree()
    sums = np.zeros(graph.num_nodes, np.float64)
    nonempty = np.flatnonzero(degrees > 0)
    if len(nonempty):
        sums[nonempty] = np.add.reduceat(per_node[graph.indices], graph.indptr[nonempty], dtype=np.float64)
    bound = (sums / np.maximum(degrees, 1)).astype(np.float32)
    affected = np.flatnonzero(bound > 0)
    return affected, bound[affected]


def first_layer(graph: CSRGraph, plan: SlotPlan, features_changed: np.ndarray,
                neighbours_changed: np.ndarray) -> np.ndarray:
    """Per slot, whether its layer-0 output depends on a change: new nodes, changed
    features or neighbour sets, and the neighbours of nodes with changed features (exact)."""
    need = (plan.old_slot < 0) | features_changed | neighbours_changed
    changed = np.flatnonzero(features_changed | (plan.old_slot < 0))
    if len(changed):
        need[graph.rows(changed)[1]] = True
    return need


def within_hops(graph: CSRGraph, start: np.ndarray, hops: int) -> np.ndarray:
    """Per node, whether it is within `hops` edges of a node where `start` is True."""
    reached = start.copy()
    for _ in range(hops):
        rows = np.flatnonzero(reached)
        if len(rows):
            reached[graph.rows(rows)[1]] = True
    return reached


def moved(now: np.ndarray, recomputed: tuple[np.ndarray, np.ndarray] | None,
          plan: SlotPlan) -> tuple[np.ndarray, np.ndarray]:
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
    shift[rows] = unit_shift(now[rows], before[differs])
    new = plan.old_slot < 0
    shift[new] = np.inf
    return shift, union_ids(rows, np.flatnonzero(new))


def unit_shift(now: np.ndarray, before: np.ndarray) -> np.ndarray:
    """Per row, how far its unit vector moved (L2): a bound on the change of any cosine."""
    return np.linalg.norm(l2_normalise(now) - l2_normalise(before), axis=1)


def max_abs_change(now: np.ndarray, before: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Per kept row, the largest absolute change of any column (`before` is overwritten)."""
    if not kept.any():
        return np.zeros(int(kept.sum()), np.float32)
    np.subtract(now, before, out=before)
    np.abs(before, out=before)
    return before.max(axis=1)[kept]


def typical_size(x: np.ndarray, sample: int = 32_768) -> float:
    """Mean per-row max-abs of a layer's input, over an even sample of its rows (a scale
    for the propagation tolerance, not an exact figure)."""
    if not len(x):
        return 0.0
    rows = x[:: -(-len(x) // sample)]  # at most `sample` rows, evenly spaced
    return float(np.maximum(rows.max(axis=1), -rows.min(axis=1)).mean())


@dataclass
class LayerStates:
    """Per layer l, in tonight's slots: every node's output (`h{l+1}` in a snapshot) and
    the change of its layer-l input not yet propagated (`drift{l}`); and each layer's
    typical input size (`scales`), the unit of the tolerance."""

    outputs: list[np.ndarray]
    drift: list[np.ndarray]
    scales: list[float]

    @classmethod
    def from_snapshot(cls, snapshot: Snapshot, plan: SlotPlan, layers: int) -> "LayerStates | None":
        """Last run's states moved to tonight's slots; None when the snapshot holds no
        hidden states (nothing to build on)."""
        old = [snapshot.array(f"h{layer + 1}") for layer in range(layers)]
        if any(o is None for o in old):
            return None
        outputs = [carried(o, plan, reuse=True) for o in old]
        del old
        drift = [carried(snapshot.array(f"drift{layer}"), plan, reuse=True) for layer in range(layers)]
        return cls(outputs, drift, snapshot.meta.get("scales") or [0.0] * layers)

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays a snapshot keeps, by name."""
        return {**{f"h{i + 1}": out for i, out in enumerate(self.outputs)},
                **{f"drift{i}": d for i, d in enumerate(self.drift)}}


@dataclass
class Propagated:
    states: LayerStates  # tonight's outputs and drift; scales measured tonight
    shift: np.ndarray  # per slot: how far its embedding's unit vector moved (inf: new, or a full run)
    written: np.ndarray  # slots whose embedding or last-layer output differs from last run's
    recomputed: list[int]  # rows recomputed per layer


def propagate(apply_layer: LayerStep, layers: int, graph: CSRGraph, features: np.ndarray, plan: SlotPlan,
              features_changed: np.ndarray, neighbours_changed: np.ndarray, previous: LayerStates | None,
              tolerance: float) -> Propagated:
    """Every layer's outputs for tonight's graph and features, recomputing only the rows
    whose inputs moved past the tolerance (see the module doc); `previous` None
    recomputes every row. The second-to-last layer's output is the embedding."""
    n = len(plan.order)
    full = previous is None
    if full:
        outputs: list = [None] * layers
        drift = [np.zeros(n, np.float32) for _ in range(layers)]
        scales = [0.0] * layers
    else:
        outputs, drift, scales = previous.outputs, previous.drift, previous.scales
    structural = plan.old_slot < 0
    if not full:
        structural = structural | neighbours_changed
    recomputed = []
    shift, written = np.full(n, np.inf, np.float32), np.arange(n)
    if not full:
        shift, written = np.zeros(n, np.float32), [np.flatnonzero(plan.old_slot < 0)]
    layer_inputs = features
    need = np.ones(n, bool) if full else first_layer(graph, plan, features_changed, neighbours_changed)
    for layer in range(layers):
        rows = np.flatnonzero(need)
        out = apply_layer(layer, rows, layer_inputs, graph)
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
            shift[existing] = unit_shift(out[kept], before[kept])
        change_of_row = max_abs_change(out, before, kept)
        if layer >= layers - 2:
            written.append(existing[change_of_row > 0])
        if layer + 1 == layers:
            break
        # by how much each node's next-layer input moved: its own row, and the mean of
        # its neighbours' rows (new nodes need no delta: their neighbours are structural)
        change = np.zeros(n, np.float32)
        if len(existing):
            change[existing] = change_of_row
            affected, moved_mean = mean_change(graph, existing, change_of_row)
            change[affected] += moved_mean
        drift[layer + 1] += change
        need = structural | (drift[layer + 1] > tolerance * scales[layer + 1])
    # typical input size of each layer, for the next run's thresholds
    measured = [typical_size(x) for x in [features] + outputs[:-1]]
    if not full:
        shift[plan.old_slot < 0] = np.inf
        written = union_ids(*written)
    return Propagated(LayerStates(outputs, drift, measured), shift, written, recomputed)
