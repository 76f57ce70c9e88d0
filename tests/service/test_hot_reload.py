"""`graphsvc serve` as users start it (a real uvicorn process) keeps answering while jobs
publish new index versions, switches to them, and refuses broken ones."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest

from graphsvc.index.artifacts import CURRENT_FILE, MANIFEST_FILE, publish, version_dirname
from graphsvc.index.faiss_index import VectorIndex
from tests.service.conftest import MODEL, clustered_vectors, exact_top, make_catalogue
from tests.support import REPO_ROOT, free_ports


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    catalogue = make_catalogue(root, n=3000, dim=32)
    (port,) = free_ports(1)
    env = {**os.environ, "GRAPHSVC_API_TOKEN": "t0ken"}
    server = subprocess.Popen(
        [sys.executable, "-m", "graphsvc.cli", "--store", str(catalogue.store), "--index-dir", str(catalogue.index_dir),
         "serve", "--port", str(port), "--reload-interval", "0.1"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=base, headers={"Authorization": "Bearer t0ken"}, timeout=10)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if client.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"graphsvc serve did not become ready: {server.communicate(timeout=5)[0]}")
            time.sleep(0.2)
        yield catalogue, client
    finally:
        client.close()
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=30)
        # uvicorn shuts down gracefully, then re-raises the signal it caught
        assert server.returncode in (0, -signal.SIGTERM) and "Traceback" not in output, output


class SteadyLoad:
    """Threads asking for similar products without pause; every answer is recorded."""

    def __init__(self, base_url: str, keys: list[str], threads: int = 3):
        self.base_url, self.keys = base_url, keys
        self.stop = threading.Event()
        self.answers: list[list[tuple[int, int]]] = [[] for _ in range(threads)]  # per thread: (status, version)
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(n,)) for n in range(threads)]

    def _run(self, n: int) -> None:
        rng = np.random.default_rng(n)
        with httpx.Client(base_url=self.base_url, headers={"Authorization": "Bearer t0ken"}, timeout=10) as client:
            while not self.stop.is_set():
                key = self.keys[rng.integers(len(self.keys))]
                try:
                    response = client.get(f"/v1/products/{key}/similar", params={"k": 5})
                except httpx.HTTPError as exc:
                    self.failures.append(f"{key}: {exc!r}")
                    continue
                if response.status_code != 200 or len(response.json()["hits"]) != 5:
                    self.failures.append(f"{key}: {response.status_code} {response.text[:200]}")
                    continue
                self.answers[n].append((response.status_code, response.json()["index_version"]))

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def served_versions(self) -> set[int]:
        return {version for answers in self.answers for _, version in answers}


def live_version(client: httpx.Client) -> int:
    (entry,) = client.get("/v1/collections").json()["collections"]
    return entry["version"]


def wait_for_version(client: httpx.Client, version: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while live_version(client) != version:
        assert time.monotonic() < deadline, f"version {version} was not loaded within {timeout}s"
        time.sleep(0.05)


def test_steady_load_across_two_publishes_fails_nothing_and_ends_on_the_newest(served):
    catalogue, client = served
    start = live_version(client)
    new_vectors = {}
    with SteadyLoad(str(client.base_url), catalogue.keys) as load:
        time.sleep(0.5)
        for step, seed in enumerate((101, 202), start=1):
            vectors, _ = clustered_vectors(len(catalogue.keys), 32, 6, seed)
            manifest = publish(catalogue.index_dir, "products", VectorIndex.build(vectors, kind="flat"),
                               catalogue.keys, MODEL)
            assert manifest.version == start + step
            new_vectors[manifest.version] = vectors
            wait_for_version(client, manifest.version)
            time.sleep(0.5)
    answered = sum(len(a) for a in load.answers)
    assert load.failures == [], load.failures[:5]
    assert answered > 50
    assert {start, start + 1, start + 2} <= load.served_versions()
    for answers in load.answers:  # each client sees versions only move forward
        versions = [v for _, v in answers]
        assert versions == sorted(versions)

    newest = start + 2
    body = client.get("/v1/products/P00007/similar", params={"k": 5}).json()
    assert body["index_version"] == newest
    catalogue.vectors = new_vectors[newest]
    assert [h["_key"] for h in body["hits"]] == exact_top(catalogue, new_vectors[newest][7], 5, exclude="P00007")


def _point_current_at(collection_dir, version: int) -> None:
    temporary = collection_dir / f".tmp-{CURRENT_FILE}-test"
    temporary.write_text(version_dirname(version) + "\n")
    os.replace(temporary, collection_dir / CURRENT_FILE)


def test_broken_and_half_written_versions_are_refused_and_the_old_one_keeps_serving(served):
    catalogue, client = served
    collection_dir = catalogue.index_dir / "products"
    good = live_version(client)
    before = client.get("/v1/products/P00003/similar", params={"k": 5}).json()

    with SteadyLoad(str(client.base_url), catalogue.keys) as load:
        # a version whose index file was cut short after its checksum was taken
        broken = collection_dir / version_dirname(good + 1)
        shutil.copytree(collection_dir / version_dirname(good), broken)
        manifest = json.loads((broken / MANIFEST_FILE).read_text())
        (broken / MANIFEST_FILE).write_text(json.dumps({**manifest, "version": good + 1}))
        with open(broken / "index.faiss", "r+b") as f:
            f.truncate(1000)
        _point_current_at(collection_dir, good + 1)
        deadline = time.monotonic() + 20
        while "refused" not in client.get("/v1/collections").json()["collections"][0]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        refused = client.get("/v1/collections").json()["collections"][0]
        assert refused["version"] == good and refused["refused"]["version"] == good + 1
        assert "checksum mismatch" in refused["refused"]["reason"]

        # a version directory without its manifest (a copy interrupted half-way)
        half = collection_dir / version_dirname(good + 2)
        half.mkdir()
        shutil.copy(collection_dir / version_dirname(good) / "index.faiss", half / "index.faiss")
        _point_current_at(collection_dir, good + 2)
        deadline = time.monotonic() + 20
        while client.get("/v1/collections").json()["collections"][0].get("refused", {}).get("version") != good + 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert "manifest.json is missing" in client.get("/v1/collections").json()["collections"][0]["refused"]["reason"]
        time.sleep(0.3)

    assert load.failures == [], load.failures[:5]
    assert load.served_versions() == {good}
    assert client.get("/v1/products/P00003/similar", params={"k": 5}).json() == before
    metrics = client.get("/metrics").text
    assert 'graphsvc_index_reloads_total{collection="products",outcome="refused"}' in metrics

    # the next good publish is picked up again
    manifest = publish(catalogue.index_dir, "products", VectorIndex.build(catalogue.vectors, kind="flat"),
                       catalogue.keys, MODEL)
    wait_for_version(client, manifest.version)
    assert "refused" not in client.get("/v1/collections").json()["collections"][0]
