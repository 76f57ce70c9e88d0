"""The service holds the embedded store open and lets go when a job wants to write."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient

from graphsvc.service.app import ServiceConfig, create_app

REPO = Path(__file__).resolve().parents[2]
WRITER = """
import sys, pyarrow as pa
sys.path.insert(0, sys.argv[3])
from graphsvc.store.embedded import EmbeddedStore
with EmbeddedStore(sys.argv[1], create=False) as store:
    keys = [k for k in store.select_keys("products")]
    store.update_attributes("products", pa.table({"_key": keys, "title": ["rewritten"] * len(keys)}))
    print("holding", flush=True)
    sys.stdin.readline()  # until the test lets it finish
"""


def test_a_writing_job_gets_the_file_fields_are_503_meanwhile_and_see_its_writes_after(catalogue, monkeypatch):
    monkeypatch.setenv("GRAPHSVC_STORE_LOCK_WAIT", "20")
    config = ServiceConfig(index_dir=str(catalogue.index_dir), store=str(catalogue.store))
    with TestClient(create_app(config)) as client:
        before = client.get("/v1/products/P00007/similar", params={"k": 3, "fields": "title"})
        assert before.status_code == 200 and before.json()["hits"][0]["title"].startswith("Product ")
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(catalogue.store), "", str(REPO)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert writer.stdout.readline().strip() == "holding"  # the service let go of the file
            during = client.get("/v1/products/P00007/similar", params={"k": 3, "fields": "title"})
            assert during.status_code == 503 and "being written by a job" in during.json()["error"]
            assert client.get("/v1/products/P00007/similar", params={"k": 3}).status_code == 200
        finally:
            writer.communicate("done\n", timeout=30)
        assert writer.returncode == 0
        after = client.get("/v1/products/P00007/similar", params={"k": 3, "fields": "title"})
        assert after.status_code == 200 and {h["title"] for h in after.json()["hits"]} == {"rewritten"}
