"""The runtime repository generated for the Python backend: layout, incremental sync, refusals (no server)."""

from __future__ import annotations

import importlib.util
import logging
import shutil

import pytest

from graphsvc.errors import ModelRepositoryError
from graphsvc.models.repository import ModelConfig, read_model_config, write_model_config
from graphsvc.triton.runtime_repository import build_runtime_repository, sync_runtime_repository


def test_runtime_repository_layout(modules_and_repo, tmp_path):
    _, repo = modules_and_repo
    runtime = tmp_path / "rt"
    assert build_runtime_repository(repo, runtime) == ["addmul", "points"]
    config = read_model_config(runtime / "addmul" / "config.pbtxt")
    original = read_model_config(repo / "addmul" / "config.pbtxt")
    assert config.backend == "python" and config.platform == ""
    assert config.input == original.input and config.output == original.output
    assert config.max_batch_size == 8 and config.dynamic_batching == original.dynamic_batching
    assert (runtime / "addmul" / "1" / "model.py").is_file()
    assert (runtime / "addmul" / "1" / "model.pt").resolve() == (repo / "addmul" / "1" / "model.pt").resolve()
    # unchanged source: a second build leaves the model directory alone
    before = (runtime / "addmul").stat().st_ino
    assert build_runtime_repository(repo, runtime) == ["addmul", "points"]
    assert (runtime / "addmul").stat().st_ino == before


def test_sync_reports_changes_and_keeps_a_model_whose_update_is_broken(modules_and_repo, tmp_path):
    _, good = modules_and_repo
    repo, runtime = tmp_path / "repo", tmp_path / "rt"
    shutil.copytree(good, repo)
    first = sync_runtime_repository(repo, runtime)
    assert first.changed == ["addmul", "points"] and first.removed == [] and first.errors == {}
    assert sync_runtime_repository(repo, runtime).changed == []  # nothing changed, nothing rebuilt

    (repo / "points" / "config.pbtxt").write_text("max_batch_size: 'eight'\n")  # a broken edit …
    shutil.copytree(repo / "addmul" / "1", repo / "addmul" / "2")  # … beside a good one
    sync = sync_runtime_repository(repo, runtime, strict=False)
    assert sync.changed == ["addmul"] and "points" in sync.errors and "config.pbtxt" in sync.errors["points"]
    assert sync.served == ["addmul", "points"]  # the old runtime copy of 'points' stays
    assert (runtime / "points" / "1" / "model.py").exists() and (runtime / "addmul" / "2" / "model.py").exists()
    with pytest.raises(ModelRepositoryError, match="points"):
        sync_runtime_repository(repo, runtime)  # at start-up a broken model is an error

    shutil.rmtree(repo / "points")
    sync = sync_runtime_repository(repo, runtime, strict=False)
    assert sync.removed == ["points"] and not (runtime / "points").exists()


def test_runtime_dir_must_be_ours(modules_and_repo, tmp_path):
    _, repo = modules_and_repo
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(ModelRepositoryError, match="refusing"):
        build_runtime_repository(repo, tmp_path)
    assert (tmp_path / "precious.txt").exists()


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is not None, reason="onnxruntime is installed")
def test_onnx_model_skipped_with_warning(tmp_path, caplog):
    write_model_config(tmp_path / "repo" / "enc", ModelConfig(name="enc", platform="onnxruntime_onnx"))
    (tmp_path / "repo" / "enc" / "1").mkdir()
    (tmp_path / "repo" / "enc" / "1" / "model.onnx").write_bytes(b"onnx")
    with caplog.at_level(logging.WARNING, logger="graphsvc.triton.runtime_repository"):
        assert build_runtime_repository(tmp_path / "repo", tmp_path / "rt") == []
    assert "enc" in caplog.text and "onnxruntime" in caplog.text


def test_model_without_model_file_is_an_error(tmp_path):
    write_model_config(tmp_path / "repo" / "empty", ModelConfig(name="empty", platform="pytorch_libtorch"))
    with pytest.raises(ModelRepositoryError, match="empty.*model.pt"):
        build_runtime_repository(tmp_path / "repo", tmp_path / "rt")

