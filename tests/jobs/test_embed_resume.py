"""`jobs embed-products` killed mid-embedding (SIGKILL) and rerun: finished batches come
from the journal, the rest from Triton, and the result equals an uninterrupted run's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from graphsvc.settings import TEST_KILL_AT
from tests.jobs.reindex_support import attributes, write_graph
from tests.support import REPO_ROOT


def embed_process(store_path, index_dir, triton_url, mode, kill_at=None):
    env = {k: v for k, v in os.environ.items() if k != TEST_KILL_AT.name}
    if kill_at:
        env[TEST_KILL_AT.name] = kill_at
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", "--store", str(store_path), "--index-dir", str(index_dir),
         "--triton-url", triton_url, "embed-products", "--mode", mode, "--layer-batch-size", "256",
         "--batch-size", "256", "--json"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )


@pytest.mark.parametrize("mode", ["layerwise"])  # sampled mode journals the same way (S-B<n>.npz)
def test_rerun_after_a_kill_skips_finished_batches(mode, reindex_triton, tmp_path):
    store_path = tmp_path / "store.duckdb"
    write_graph(store_path)
    reference = embed_process(store_path, tmp_path / "reference-indexes", reindex_triton.url, mode)
    assert reference.returncode == 0, reference.stderr
    expected = attributes(store_path)
    total = json.loads(reference.stdout)["batches"]["computed"]
    assert total > 3

    killed = embed_process(store_path, tmp_path / "indexes", reindex_triton.url, mode, kill_at="embed:3")
    assert killed.returncode == -signal.SIGKILL
    rerun = embed_process(store_path, tmp_path / "indexes", reindex_triton.url, mode)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["batches"] == {"computed": total - 3, "reused": 3}
    assert attributes(store_path) == expected
    assert not list((tmp_path / "indexes" / ".jobs" / "products").iterdir())  # the journal goes at the end
