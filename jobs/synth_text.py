"""JSON lines built from numpy columns in bulk, for writing dumps of tens of millions of rows.

`json.dumps` per document runs at about 100k short lines/s. Here every field of a block of
lines is an Arrow string column made by numpy table look-ups or Arrow casts, and
`binary_join_element_wise` glues the columns into lines in C++; the joined column's data
buffer is the block's text. No Python code runs per line or per value. It covers what the
synthetic catalogue writes: constant text, integers, zero-padded keys, words from a fixed
vocabulary and lists of floats.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# "0000".."9999": keys are built four digits per look-up instead of one division per digit
_FOUR_DIGITS = np.array([list(f"{i:04d}".encode()) for i in range(10_000)], dtype=np.uint8)


def fixed_width(matrix: np.ndarray) -> pa.Array:
    """Each row of a [n, width] uint8 matrix as one string (zero-copy)."""
    matrix = np.ascontiguousarray(matrix, dtype=np.uint8)
    n, width = matrix.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int64)
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(matrix))


def padded_integers(values: np.ndarray, digits: int) -> pa.Array:
    """Non-negative integers below 10**digits, zero-padded to `digits`."""
    values = np.asarray(values, dtype=np.int64)
    groups = -(-digits // 4)
    columns = []
    for _ in range(groups):
        values, low = np.divmod(values, 10_000)
        columns.append(_FOUR_DIGITS[low])
    matrix = np.concatenate(columns[::-1], axis=1)
    return fixed_width(matrix[:, groups * 4 - digits :])


def integers(values: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(np.asarray(values, dtype=np.int64)), pa.large_string())


def vocabulary(words: list[str], indices: np.ndarray) -> pa.Array:
    """Row i gets `words[indices[i]]`, as given (quote JSON strings yourself)."""
    return pc.take(pa.array(words, pa.large_string()), pa.array(np.asarray(indices, dtype=np.int64)))


def float_lists(values: np.ndarray, limit: float = 9.99) -> pa.Array:
    """Each row of `values` [n, d] as `v0,v1,…` with two decimals, clipped to ±`limit`.

    Every number has the same width (`-1.25`, ` 0.50`: JSON allows the space), so a row's
    text is one look-up per value and no per-row lengths are needed.
    """
    steps = int(round(limit * 100))
    q = np.rint(np.asarray(values, dtype=np.float32) * np.float32(100))
    np.clip(q, -steps, steps, out=q)
    index = q.astype(np.int32) + steps
    table = _float_table(steps)
    n, d = index.shape
    text = table[index].reshape(n, d * table.shape[1])
    return fixed_width(text[:, :-1])  # the last value has no comma


def exact_float_lists(values: np.ndarray) -> pa.Array:
    """Each row of `values` [n, d] as `v0,v1,…`, every float32 written in full (Arrow's
    shortest round-trip text): for data that is not ours to round, such as OGB features."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    if not np.isfinite(values).all():
        raise ValueError("features hold NaN or infinite values, which JSON cannot carry")
    n, d = values.shape
    texts = pc.cast(pa.array(values.reshape(-1)), pa.large_string())
    rows = pa.LargeListArray.from_arrays(pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int64)), texts)
    return pc.binary_join(rows, pa.scalar(",", pa.large_string()))


_FLOAT_TABLES: dict[int, np.ndarray] = {}


def _float_table(steps: int) -> np.ndarray:
    if steps not in _FLOAT_TABLES:
        words = [f"{q / 100:5.2f}," for q in range(-steps, steps + 1)]
        width = max(map(len, words))
        _FLOAT_TABLES[steps] = np.array([list(w.rjust(width).encode()) for w in words], dtype=np.uint8)
    return _FLOAT_TABLES[steps]


def lines(*parts: str | pa.Array) -> pa.Buffer:
    """The columns and constants in `parts` joined into lines (a newline added to each):
    one buffer holding the whole block's text."""
    parts = [pa.scalar(p, pa.large_string()) if isinstance(p, str) else p for p in (*parts, "\n", "")]
    joined = pc.binary_join_element_wise(*parts)
    offsets = np.frombuffer(joined.buffers()[1], dtype=np.int64, count=len(joined) + 1, offset=joined.offset * 8)
    return joined.buffers()[2][offsets[0] : offsets[-1]]
