"""The executor seam: `--executor local|ray` and `--ray-address` (GRAPHSVC_EXECUTOR,
GRAPHSVC_RAY_ADDRESS) on the embed jobs and reindex; the local executor never imports Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from graphsvc.errors import ConfigError
from jobs.cli import cli
from jobs.embed_products import EmbedProductsConfig, embed_products
from tests.jobs.reindex_support import write_graph
from tests.support import REPO_ROOT


@pytest.mark.parametrize("command", ["embed-products", "embed-movies", "reindex"])
def test_each_job_takes_the_executor_options_with_their_variables(command):
    text = " ".join(CliRunner().invoke(cli, [command, "--help"]).output.split())
    assert "--executor [local|ray]" in text and "[env GRAPHSVC_EXECUTOR]" in text
    assert "--ray-address" in text and "[env GRAPHSVC_RAY_ADDRESS]" in text


def test_an_unknown_executor_is_refused_by_name():
    result = CliRunner().invoke(cli, ["embed-products", "--executor", "spark"])
    assert result.exit_code == 2 and "'spark' is not one of 'local', 'ray'" in result.output


def test_the_ray_executor_without_ray_installed_says_how_to_get_it(monkeypatch):
    from graphsvc.distributed.cluster import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as where it is not installed
    with pytest.raises(ConfigError, match=r"pip install 'graphsvc\[ray\]'"):
        import_ray()


def test_the_sampled_mode_is_refused_on_ray_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="--executor ray runs the layer-wise mode only"):
        embed_products(None, None, tmp_path, EmbedProductsConfig(executor="ray", mode="sampled"))


def test_the_local_executor_never_imports_ray(ray_triton, tmp_path):
    write_graph(tmp_path / "store.duckdb")
    args = ["--store", str(tmp_path / "store.duckdb"), "--index-dir", str(tmp_path / "indexes"),
            "--triton-url", ray_triton.url, "embed-products", "--layer-batch-size", "512", "--json"]
    code = ("import sys; from jobs.cli import cli; import jobs.embed_movies, jobs.reindex; "
            f"cli({args!r}, standalone_mode=False); print('ray imported:', 'ray' in sys.modules)")
    env = {**os.environ, "GRAPHSVC_EXECUTOR": "local", "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    *summary, last = done.stdout.strip().splitlines()
    assert last == "ray imported: False"
    assert json.loads("\n".join(summary))["executor"] == "local"


def test_an_unreachable_ray_address_fails_at_once_with_what_to_check():
    from graphsvc.distributed.cluster import ray_session
    from tests.support import free_ports

    pytest.importorskip("ray")
    (port,) = free_ports(1)
    with pytest.raises(ConfigError, match=rf"Ray is not reachable at 127.0.0.1:{port} .* check --ray-address"):
        with ray_session(f"127.0.0.1:{port}"):
            pass
    with pytest.raises(ConfigError, match="must be auto, host:port or ray://host:port"):
        with ray_session("nowhere"):
            pass
