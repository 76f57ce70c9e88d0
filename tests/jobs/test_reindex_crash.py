"""`jobs reindex` killed (SIGKILL) at several points, then rerun: the result equals an
uninterrupted run's, finished batches are not recomputed, readers only ever load
complete index versions, and the lock never stays stuck."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner

from graphsvc.errors import IndexNotFound
from graphsvc.index.artifacts import load_current
from graphsvc.runs import EXIT_LOCK_HELD, LockHeld, RunLock
from graphsvc.settings import TEST_KILL_AT
from jobs.cli import cli as jobs_cli
from tests.jobs.reindex_support import attributes, change_catalogue, fresh_copy
from tests.support import REPO_ROOT

OPTIONS = ["--layer-batch-size", "64", "--write-batch", "200"]


def reindex_process(store_path, index_dir, triton_url, kill_at=None):
    env = {**os.environ}
    env.pop(TEST_KILL_AT.name, None)
    if kill_at:
        env[TEST_KILL_AT.name] = kill_at
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", "--store", str(store_path), "--index-dir", str(index_dir),
         "--triton-url", triton_url, "reindex", "products", *OPTIONS, "--json"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )


class Reader(threading.Thread):
    """Loads the current index over and over, as the service would, noting any failure."""

    def __init__(self, index_dir):
        super().__init__(daemon=True)
        self.index_dir, self.loads, self.failures, self.versions = index_dir, 0, [], set()
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            try:
                loaded = load_current(self.index_dir, "products")
                assert loaded.index.count == len(loaded.keys) == loaded.manifest.count
                self.loads += 1
                self.versions.add(loaded.version)
            except IndexNotFound:
                pass
            except Exception as exc:  # a torn or half-written version
                self.failures.append(repr(exc))
            time.sleep(0.01)


@pytest.fixture(scope="module")
def changed_catalogue(reindex_baseline, tmp_path_factory):
    """The baseline with a day's changes, and an uninterrupted reindex of it to compare with."""
    root = tmp_path_factory.mktemp("crash-reference")
    store_path, index_dir = fresh_copy(reindex_baseline[0], root)
    change_catalogue(store_path, share=0.04, seed=21)
    pristine = root / "pristine"
    pristine.mkdir()
    fresh_copy(root, pristine)
    return root, pristine


@pytest.fixture(scope="module")
def uninterrupted(changed_catalogue, reindex_triton):
    root, pristine = changed_catalogue
    target = root / "uninterrupted"
    target.mkdir()
    store_path, index_dir = fresh_copy(pristine, target)
    result = reindex_process(store_path, index_dir, reindex_triton.url)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), attributes(store_path), load_current(index_dir, "products")


def published_equal(a, b):
    assert a.keys.to_pylist() == b.keys.to_pylist()
    assert a.index.count == b.index.count and a.index.kind == b.index.kind
    ids = np.arange(a.index.count)
    np.testing.assert_allclose(a.index.vectors(ids), b.index.vectors(ids), atol=1e-6)


# during embedding; between write-back transactions; inside publish, after the version
# directory is renamed into place but before CURRENT names it; after publishing, before
# the snapshot is committed
@pytest.mark.parametrize("kill_at", ["embed:3", "write_back:1", "publish_renamed", "published"])
def test_killed_run_reruns_to_the_same_result_without_redoing_finished_batches(
        kill_at, changed_catalogue, uninterrupted, reindex_triton, tmp_path):
    _, pristine = changed_catalogue
    expected_summary, expected_attributes, expected_index = uninterrupted
    store_path, index_dir = fresh_copy(pristine, tmp_path)
    reader = Reader(index_dir)
    reader.start()
    try:
        killed = reindex_process(store_path, index_dir, reindex_triton.url, kill_at=kill_at)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        runs = list((index_dir / ".reindex" / "products").glob("run-*"))
        assert len(runs) == 1
        batches_before = len([p for p in runs[0].glob("*.npy") if p.name.startswith("L")])
        assert (index_dir / ".reindex" / "products" / "LOCK").exists()  # the crash left its lock behind

        rerun = reindex_process(store_path, index_dir, reindex_triton.url)
        assert rerun.returncode == 0, rerun.stderr
    finally:
        reader.stopping.set()
        reader.join()
    summary = json.loads(rerun.stdout)
    assert summary["lock_taken_over_from"]["host"] == socket.gethostname()
    assert summary["run_id"] == expected_summary["run_id"]
    total = expected_summary["batches"]["computed"]
    assert summary["batches"]["reused"] == batches_before
    assert summary["batches"]["computed"] == total - batches_before
    if kill_at == "embed:3":
        assert batches_before == 3
    else:
        assert batches_before == total  # killed after embedding: nothing recomputed
    assert attributes(store_path) == expected_attributes
    published = load_current(index_dir, "products")
    published_equal(published, expected_index)
    if kill_at == "published":
        assert published.version == expected_index.version  # the publish was not repeated
    assert reader.failures == [] and reader.loads > 0
    assert not (index_dir / ".reindex" / "products" / "LOCK").exists()
    assert not list((index_dir / ".reindex" / "products").glob("run-*"))  # the journal goes with the commit


def test_a_live_run_holds_the_lock_and_others_exit_75(changed_catalogue, reindex_triton, tmp_path):
    _, pristine = changed_catalogue
    store_path, index_dir = fresh_copy(pristine, tmp_path)
    lock = index_dir / ".reindex" / "products" / "LOCK"

    def run():
        return CliRunner().invoke(jobs_cli, ["--store", str(store_path), "--index-dir", str(index_dir),
                                             "--triton-url", reindex_triton.url, "reindex", "products", *OPTIONS,
                                             "--stale-after", "600", "--json"], catch_exceptions=False)

    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "token": "t",
                                "heartbeat": time.time()}))
    held = run()
    assert held.exit_code == EXIT_LOCK_HELD
    assert "another run holds" in held.stderr and str(os.getpid()) in held.stderr
    # another host's lock counts while its heartbeat is fresh, and is stale after --stale-after
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere", "token": "u", "heartbeat": time.time()}))
    assert run().exit_code == EXIT_LOCK_HELD
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere", "token": "u", "heartbeat": time.time() - 3600}))
    taken = run()
    assert taken.exit_code == 0, taken.output
    assert json.loads(taken.stdout)["lock_taken_over_from"]["host"] == "elsewhere"
    assert not lock.exists()


def test_the_lock_heartbeat_keeps_a_long_run_fresh(tmp_path):
    lock = RunLock(tmp_path / "LOCK", stale_after=5, heartbeat_every=0.05)
    with lock:
        first = json.loads((tmp_path / "LOCK").read_text())["heartbeat"]
        time.sleep(0.3)
        owner = json.loads((tmp_path / "LOCK").read_text())
        assert owner["heartbeat"] > first and owner["pid"] == os.getpid()
        with pytest.raises(LockHeld):
            RunLock(tmp_path / "LOCK").acquire()
    assert not (tmp_path / "LOCK").exists()
