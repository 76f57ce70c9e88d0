"""Arrow arrays as the JSON values documents hold, the same for every backend: float32
through its shortest decimal (0.1f reads as 0.1, not 0.10000000149), inside lists and
objects too."""

from __future__ import annotations

from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc

from graphsvc.errors import StoreError


def shortest_float64(array: pa.Array) -> pa.Array:
    """float32/float16 → float64 through their shortest decimal text."""
    return pc.cast(pc.cast(array, pa.string()), pa.float64())


def _map_leaves(array: pa.Array, leaf: Callable[[pa.Array], pa.Array]) -> pa.Array:
    """`array` with `leaf` applied under its lists and struct fields (the array itself
    where nothing changed)."""
    kind = array.type
    if pa.types.is_list(kind):
        # a slice shares its parent's values: take this slice's part and rebase the offsets
        offsets = array.offsets
        start, end = offsets[0].as_py(), offsets[-1].as_py()
        values = _map_leaves(array.values.slice(start, end - start), leaf)
        if values.type == kind.value_type:
            return array
        rebased = pc.subtract(offsets, pa.scalar(start, offsets.type))
        return pa.ListArray.from_arrays(rebased, values, mask=array.is_null())
    if pa.types.is_struct(kind):
        children = [_map_leaves(array.field(i), leaf) for i in range(kind.num_fields)]
        if all(c.type == kind.field(i).type for i, c in enumerate(children)):
            return array
        return pa.StructArray.from_arrays(
            children, names=[kind.field(i).name for i in range(kind.num_fields)], mask=array.is_null()
        )
    return leaf(array)


def shortest_floats(array: pa.Array) -> pa.Array:
    """float32 values (also in lists and objects) as float64 through their shortest decimal;
    everything else as it is. What the embedded store reads back from DuckDB."""
    return _map_leaves(array, lambda a: shortest_float64(a) if pa.types.is_float32(a.type) else a)


def json_ready(array: pa.Array) -> pa.Array:
    """An Arrow array whose `to_pylist()` is plain JSON: float32 through its shortest
    decimal, dictionaries decoded, decimals as float64, dates and times as ISO text.
    What the ArangoDB backend sends."""
    return _map_leaves(array, _json_leaf)


def _json_leaf(array: pa.Array) -> pa.Array:
    kind = array.type
    if pa.types.is_dictionary(kind):
        return json_ready(array.dictionary_decode())
    if pa.types.is_float32(kind) or pa.types.is_float16(kind):
        return shortest_float64(array)
    if pa.types.is_decimal(kind):
        return pc.cast(array, pa.float64())
    if pa.types.is_temporal(kind):
        return pc.cast(array, pa.string())
    if pa.types.is_fixed_size_list(kind) or pa.types.is_large_list(kind):
        return json_ready(array.cast(pa.list_(kind.value_type)))
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        raise StoreError(f"binary values ({kind}) have no JSON form — encode them as text first")
    return array
