"""How nodes and edges are split for training and evaluation, reproducibly.

Both splits hash a node's rank in key order with the seed, so they do not depend on the
order a store returns documents in: training and `jobs evaluate` recompute the same
split from the same collection and the same seed, without storing it anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from graphsvc.errors import ConfigError, StoreError
from graphsvc.graph import CSRGraph

SPLIT_NAMES = ("train", "valid", "test")
# what a split attribute may say, and which split it means
SPLIT_VALUES = {"train": "train", "valid": "valid", "val": "valid", "validation": "valid", "test": "test"}


def seeded_uniform(ids: np.ndarray, seed: int) -> np.ndarray:
    """A number in [0, 1) per id, fixed by (id, seed): the splitmix64 finaliser."""
    with np.errstate(over="ignore"):
        z = np.asarray(ids, np.uint64) + np.uint64(seed + 1) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def key_ranks(keys: pa.Array) -> np.ndarray:
    """rank[i] = position of node i when the keys are sorted."""
    order = pc.sort_indices(keys).to_numpy()
    ranks = np.empty(len(order), np.int64)
    ranks[order] = np.arange(len(order))
    return ranks


def random_split(keys: pa.Array, labelled: np.ndarray, fractions: tuple[float, float],
                 seed: int) -> dict[str, np.ndarray]:
    """Labelled nodes into train/valid/test by a seeded hash of their key rank."""
    train, valid = fractions
    if train <= 0 or valid < 0 or train + valid > 1:
        raise ConfigError(f"split fractions must be train > 0, valid >= 0, train + valid <= 1; got {train}, {valid}")
    labelled = np.asarray(labelled, np.int64)
    u = seeded_uniform(key_ranks(keys)[labelled], seed)
    return {
        "train": labelled[u < train],
        "valid": labelled[(u >= train) & (u < train + valid)],
        "test": labelled[u >= train + valid],
    }


def split_from_values(keys: pa.Array, values: pa.Array, attribute: str, collection: str) -> dict[str, np.ndarray]:
    """Split named by an attribute (`train`, `valid`/`val`/`validation`, `test`); nodes
    without it belong to no split. Any other value is refused, naming the document."""
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    normalised = pc.utf8_lower(pc.utf8_trim_whitespace(values))
    known = pc.is_in(normalised, value_set=pa.array(list(SPLIT_VALUES)))
    bad = pc.and_(pc.is_valid(normalised), pc.invert(known))
    if pc.any(bad).as_py():
        position = int(np.flatnonzero(bad.to_numpy(zero_copy_only=False))[0])
        raise StoreError(
            f"{collection}/{keys[position].as_py()}: '{attribute}' is {values[position].as_py()!r}; "
            f"expected one of {', '.join(sorted(SPLIT_VALUES))}"
        )
    names = normalised.to_pylist()
    splits = {name: [] for name in SPLIT_NAMES}
    for position, name in enumerate(names):
        if name is not None:
            splits[SPLIT_VALUES[name]].append(position)
    return {name: np.asarray(rows, np.int64) for name, rows in splits.items()}


@dataclass(frozen=True)
class EdgeHoldout:
    """A seeded share of the undirected edges taken out of the graph: the graph a model
    may train and infer on, and the pairs it must not have seen."""

    graph: CSRGraph  # without the held-out edges
    held_out: np.ndarray  # [H, 2] node positions, each undirected pair once
    fraction: float
    seed: int


def undirected_pairs(graph: CSRGraph) -> np.ndarray:
    """Each edge of an undirected CSR graph once, as [E, 2] with the smaller position
    first, in the graph's index type (int32 where it fits: 0.5 GB, not 1 GB, at 62M edges)."""
    rows = np.repeat(np.arange(graph.num_nodes, dtype=graph.indices.dtype), graph.degree())
    upper = rows < graph.indices
    return np.stack([rows[upper], graph.indices[upper]], axis=1)


def hold_out_edges(graph: CSRGraph, keys: pa.Array, fraction: float, seed: int,
                   chunk: int = 1 << 22) -> EdgeHoldout:
    """Hold out about `fraction` of the undirected edges, chosen by a seeded hash of the
    pair of key ranks (so the same edges whatever order the store returns them in). The
    hash runs `chunk` pairs at a time: its uint64 and float64 temporaries for every edge
    at once would be several GB at ogbn-products' size."""
    if not 0 <= fraction < 1:
        raise ConfigError(f"the held-out share of edges must be in [0, 1), got {fraction}")
    pairs = undirected_pairs(graph)
    if fraction == 0 or len(pairs) == 0:
        return EdgeHoldout(graph, np.zeros((0, 2), pairs.dtype), fraction, seed)
    ranks = key_ranks(keys)
    held = np.empty(len(pairs), bool)
    for start in range(0, len(pairs), chunk):
        a, b = ranks[pairs[start : start + chunk, 0]], ranks[pairs[start : start + chunk, 1]]
        pair_ids = np.minimum(a, b).astype(np.uint64) * np.uint64(graph.num_nodes) + np.maximum(a, b).astype(np.uint64)
        held[start : start + chunk] = seeded_uniform(pair_ids, seed) < fraction
    kept = pairs[~held]
    return EdgeHoldout(CSRGraph.from_edges(kept[:, 0], kept[:, 1], graph.num_nodes), pairs[held], fraction, seed)
