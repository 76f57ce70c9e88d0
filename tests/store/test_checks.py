"""Checks every backend applies before writing."""

import pyarrow as pa

from graphsvc.store.checks import last_rows


def test_repeated_keys_keep_their_last_row_and_keyless_rows_stay():
    assert last_rows(pa.array(["a", "b", "a", None, None, "b"])).tolist() == [2, 3, 4, 5]
    assert last_rows(pa.chunked_array([["a"], ["b"]])) is None
