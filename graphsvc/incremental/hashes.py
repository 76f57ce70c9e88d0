"""Per-document input hashes: what a node's embedding depends on directly — its features
(`row_hashes`), the set of its neighbours (`neighbour_hashes`), a text (`text_hashes`).
Touching any other attribute changes no hash, so re-embeds nothing. `fingerprint` names
a planned run by its inputs (the journal directory of a crash-safe job)."""

from __future__ import annotations

import hashlib
import json
from typing import Sequence

import numpy as np
import pyarrow as pa

from graphsvc.graph import CSRGraph

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a well-spread 64-bit hash of each uint64."""
    with np.errstate(over="ignore"):
        z = np.asarray(x, np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def row_hashes(matrix: np.ndarray) -> np.ndarray:
    """One uint64 per row of a float32 matrix, from the exact bit patterns: a multilinear
    hash (each column's bits times its own odd 64-bit constant, summed mod 2^64), so a
    change of any one value always changes the hash, then spread by `mix64`."""
    bits = np.ascontiguousarray(matrix, np.float32).view(np.uint32)
    constants = mix64(np.arange(bits.shape[1], dtype=np.uint64)) | np.uint64(1)
    with np.errstate(over="ignore"):
        return mix64(np.einsum("ij,j->i", bits.astype(np.uint64), constants, dtype=np.uint64))


def text_hashes(texts: Sequence[str]) -> np.ndarray:
    return np.array(
        [int.from_bytes(hashlib.blake2b(t.encode("utf-8"), digest_size=8).digest(), "little") for t in texts],
        np.uint64,
    )


def neighbour_hashes(graph: CSRGraph, identity: np.ndarray) -> np.ndarray:
    """Per node, an order-free hash of the set of its neighbours' identities."""
    mixed = mix64(np.asarray(identity, np.uint64))[graph.indices]
    sums = np.zeros(graph.num_nodes, np.uint64)
    nonempty = np.flatnonzero(graph.degree() > 0)
    if len(nonempty):
        with np.errstate(over="ignore"):
            sums[nonempty] = np.add.reduceat(mixed, graph.indptr[nonempty], dtype=np.uint64)
    return sums ^ mix64(graph.degree().astype(np.uint64))


def fingerprint(*parts) -> str:
    """A short digest of arrays and JSON-able values (the identity of a planned run)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(np.ascontiguousarray(part).tobytes())
        elif isinstance(part, (pa.Array, pa.ChunkedArray)):
            for buffer in (part.combine_chunks() if isinstance(part, pa.ChunkedArray) else part).buffers():
                if buffer is not None:
                    h.update(memoryview(buffer))
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"|")
    return h.hexdigest()[:16]
