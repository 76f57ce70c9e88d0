"""Finding the tritonserver binary with a Python backend for this interpreter."""

from __future__ import annotations

import os

from graphsvc.triton.binary import find_tritonserver


def test_find_tritonserver():
    binary = find_tritonserver()
    assert binary.name == "tritonserver" and os.access(binary, os.X_OK)

