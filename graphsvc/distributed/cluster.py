"""Joining a Ray cluster for one job, and what its workers need from the driver."""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from graphsvc.errors import ConfigError
from graphsvc.settings import TEST_KILL_AT, read

#: a layer broadcast to every partition may take this share of the smallest node's object store
BROADCAST_SHARE = 0.25

#: seconds a Ray started on this machine may take to bring up its GCS: Ray's own default, 30 s,
#: is not enough on a busy 2-core machine (seen: a cold start under load timed out)
LOCAL_GCS_WAIT_S = "120"


def import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray on this machine and the cluster's: "
                          "pip install 'graphsvc[ray]' (or use --executor local)") from None
    return ray


def init_ray(address: str | None = None, attempts: int = 3, **options: Any):
    """`ray.init`. A Ray started here (no address) waits longer for its GCS (unless
    RAY_gcs_server_port_wait_time_s says otherwise), and a start that fails — seen on a
    busy 2-core machine right after another Ray was shut down: the node never registered
    with its GCS — is torn down and tried again, `attempts` times in all."""
    ray = import_ray()
    local = address is None and not os.environ.get("RAY_ADDRESS")
    if local:
        os.environ.setdefault("RAY_gcs_server_port_wait_time_s", LOCAL_GCS_WAIT_S)
    for attempt in range(1, attempts + 1):
        try:
            return ray.init(address=address, include_dashboard=False, log_to_driver=False, **options)
        except Exception as exc:  # Ray raises a bare Exception for a node that never came up
            if not local or attempt == attempts or isinstance(exc, (ConnectionError, ValueError, TypeError)):
                raise
            logging.getLogger(__name__).warning("a local Ray did not start (%s); trying again", exc)
            ray.shutdown()
            time.sleep(2.0 * attempt)


@contextmanager
def ray_session(address: str | None) -> Iterator:
    """Ray, connected: a session already open in this process (tests, notebooks) is used
    as it is; otherwise the cluster at `address` (None: a Ray started on this machine for
    the job, or RAY_ADDRESS) is joined and left at the end."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    _check_reachable(address)
    try:
        init_ray(address)
    except ConnectionError as exc:
        raise ConfigError(f"Ray is not reachable at {address}: {exc} — check --ray-address "
                          f"(or GRAPHSVC_RAY_ADDRESS)") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """A host:port (or ray://host:port) address must accept a connection: Ray itself
    retries an unreachable one for minutes before it gives up."""
    if not address or address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray-address must be auto, host:port or ray://host:port, not '{address}'")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(f"Ray is not reachable at {address} ({exc}) — check --ray-address "
                          f"(or GRAPHSVC_RAY_ADDRESS), or leave it out to start Ray on this machine") from None


def worker_runtime_env() -> dict | None:
    """The runtime_env of the job's actors: the driver's GRAPHSVC_* settings, so a
    worker's Triton client retries (and its kill points fire) as the driver's would.
    None when there are none: actors then start in the cluster's own environment
    (a runtime_env of their own costs each one a fresh worker process)."""
    env = {name: value for name, value in os.environ.items() if name.startswith("GRAPHSVC_")}
    return {"env_vars": env} if env else None


def task_resources(ray) -> dict:
    """A CPU per task while the cluster has one free; else none. The embed jobs keep their
    Triton actors (a CPU each) until the write-back, which comes after the index: on a
    cluster they fill, tasks that each waited for a CPU would wait for ever."""
    return {"num_cpus": 1 if ray.available_resources().get("CPU", 0) >= 1 else 0}


def run_bounded(ray, calls: Sequence[Callable[[], Any]], limit: int) -> list:
    """The results of `calls` (each submits one Ray task and returns its object ref), in
    the order of `calls`, with at most `limit` submitted and unfinished at any time: the
    next goes as soon as one finishes (a store's coordinators take that many readers or
    writers at once; Ray alone would start as many as there are CPUs)."""
    results: list = [None] * len(calls)
    pending: dict = {}
    submitted = 0
    while submitted < len(calls) or pending:
        while submitted < len(calls) and len(pending) < max(1, limit):
            pending[calls[submitted]()] = submitted
            submitted += 1
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            results[pending.pop(ref)] = ray.get(ref)
    return results


def smallest_object_store(ray) -> float:
    """Bytes of object store on the cluster's smallest live node."""
    sizes = [node["Resources"].get("object_store_memory", 0.0) for node in ray.nodes() if node.get("Alive")]
    return min(sizes) if sizes else 0.0


def worker_kill_point(name: str, marker_dir: Path | None) -> None:
    """Tests only: SIGKILL this worker when GRAPHSVC_TEST_KILL_AT is `worker:<name>`, on the
    first attempt only (the marker file `marker_dir/killed-<name>` says it happened), so
    that Ray's retry of the task then succeeds."""
    if marker_dir is None or read(TEST_KILL_AT) != f"worker:{name}":
        return
    marker = Path(marker_dir) / f"killed-{name}"
    if marker.exists():
        return
    marker.write_text("killed once\n")
    os.kill(os.getpid(), signal.SIGKILL)
