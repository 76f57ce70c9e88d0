"""config.pbtxt read/write and repository listing (no server)."""

from __future__ import annotations

import numpy as np
import pytest

from graphsvc.errors import ModelRepositoryError
from graphsvc.models.repository import (
    ModelConfig,
    ModelInput,
    ModelOutput,
    input_tensor,
    list_models,
    mc,
    model_config,
    output_tensor,
    read_model_config,
    tensor,
    write_model_config,
)

NGC_STYLE = """
name: "sage"
platform: "pytorch_libtorch"
max_batch_size: 8
input [
  { name: "x__0" data_type: TYPE_FP32 dims: [ 4 ] },
  { name: "y__1" data_type: TYPE_FP32 dims: [ 4 ] }
]
output [ { name: "out__0" data_type: TYPE_FP32 dims: [ -1, 4 ] } ]
dynamic_batching { max_queue_delay_microseconds: 500 preferred_batch_size: [ 4, 8 ] }
instance_group [ { count: 2 kind: KIND_CPU } ]
version_policy: { latest: { num_versions: 2 } }
parameters: { key: "INFERENCE_MODE" value: { string_value: "true" } }
"""


def test_round_trip_of_built_config(tmp_path):
    config = model_config(
        "addmul",
        inputs=[input_tensor("x__0", "TYPE_FP32", [4]), input_tensor("y__1", np.float32, [4])],
        outputs=[output_tensor("sum__0", "FP32", [4]), output_tensor("idx__1", "TYPE_INT64", [-1])],
        max_batch_size=8,
        dynamic_batching=True,
        max_queue_delay_microseconds=100,
        instance_count=2,
    )
    config.parameters["note"].string_value = "hello"
    path = write_model_config(tmp_path / "addmul" / "config.pbtxt", config)
    assert path.exists()
    assert [p.name for p in path.parent.iterdir()] == ["config.pbtxt"]  # no temp file left behind
    again = read_model_config(path)
    assert again == config
    assert again.input[1].data_type == mc.TYPE_FP32
    assert list(again.output[1].dims) == [-1]
    assert again.dynamic_batching.max_queue_delay_microseconds == 100
    assert again.instance_group[0].count == 2 and again.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU


def test_dynamic_batching_without_fields_survives(tmp_path):
    config = model_config("m", inputs=[], outputs=[], max_batch_size=4, dynamic_batching=True)
    write_model_config(tmp_path, config)  # a directory: writes config.pbtxt into it
    assert "dynamic_batching" in (tmp_path / "config.pbtxt").read_text()
    assert read_model_config(tmp_path).HasField("dynamic_batching")


def test_reads_ngc_style_config_and_rewrites_it_identically(tmp_path):
    (tmp_path / "config.pbtxt").write_text(NGC_STYLE)
    config = read_model_config(tmp_path / "config.pbtxt")
    assert config.name == "sage" and config.platform == "pytorch_libtorch"
    assert [i.name for i in config.input] == ["x__0", "y__1"]
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.version_policy.latest.num_versions == 2
    assert config.parameters["INFERENCE_MODE"].string_value == "true"
    write_model_config(tmp_path / "copy.pbtxt", config)
    assert read_model_config(tmp_path / "copy.pbtxt") == config


def test_overwrite_keeps_single_file(tmp_path):
    path = tmp_path / "config.pbtxt"
    write_model_config(path, ModelConfig(name="a"))
    write_model_config(path, ModelConfig(name="b"))
    assert read_model_config(path).name == "b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.pbtxt"]


def test_parse_error_names_the_file(tmp_path):
    path = tmp_path / "broken" / "config.pbtxt"
    path.parent.mkdir()
    path.write_text('name: "broken"\nmax_batch_size: "eight"\n')
    with pytest.raises(ModelRepositoryError) as info:
        read_model_config(path)
    assert str(path) in str(info.value)


def test_unknown_field_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "config.pbtxt"
    path.write_text('name: "m"\nno_such_field: 1\n')
    with pytest.raises(ModelRepositoryError, match="no_such_field") as info:
        read_model_config(path)
    assert str(path) in str(info.value)


def test_missing_file_is_an_error_naming_the_file(tmp_path):
    with pytest.raises(ModelRepositoryError) as info:
        read_model_config(tmp_path / "nope" / "config.pbtxt")
    assert "nope" in str(info.value)


def test_tensor_builders():
    assert isinstance(tensor("a", "TYPE_INT64", [1]), ModelInput)
    out = tensor("b", "BYTES", [-1], output=True)
    assert isinstance(out, ModelOutput) and out.data_type == mc.TYPE_STRING
    assert input_tensor("c", np.dtype("int32"), [2, 3]).data_type == mc.TYPE_INT32
    assert input_tensor("d", "fp16", [1], optional=True).optional
    with pytest.raises(ValueError):
        tensor("e", "TYPE_FLOAT", [1])


def test_list_models(tmp_path):
    for name in ("b_model", "a_model"):
        write_model_config(tmp_path / name, ModelConfig(name=name, platform="pytorch_libtorch"))
    (tmp_path / "a_model" / "1").mkdir()
    (tmp_path / "a_model" / "1" / "model.pt").write_bytes(b"x")
    (tmp_path / "a_model" / "2").mkdir()  # no model file: not a version
    (tmp_path / "a_model" / "10").mkdir()
    (tmp_path / "a_model" / "10" / "model.pt").write_bytes(b"x")
    (tmp_path / ".hidden").mkdir()
    write_model_config(tmp_path / "c_model", ModelConfig(platform="onnxruntime_onnx"))  # name from directory
    (tmp_path / "c_model" / "3").mkdir()
    (tmp_path / "c_model" / "3" / "model.onnx").write_bytes(b"x")
    write_model_config(tmp_path / "d_model", ModelConfig(name="d_model", backend="pytorch",
                                                         default_model_filename="net.pt"))
    (tmp_path / "d_model" / "1").mkdir()
    (tmp_path / "d_model" / "1" / "net.pt").write_bytes(b"x")

    models = list_models(tmp_path)
    assert [m.name for m in models] == ["a_model", "b_model", "c_model", "d_model"]
    a, b, c, d = models
    assert a.versions == [1, 10] and a.latest_version == 10
    assert a.model_file(10) == tmp_path / "a_model" / "10" / "model.pt"
    assert b.versions == []
    assert c.config.name == "c_model" and c.versions == [3]
    assert d.versions == [1] and d.model_filename == "net.pt"


def test_list_models_errors(tmp_path):
    with pytest.raises(ModelRepositoryError, match="does not exist"):
        list_models(tmp_path / "missing")
    (tmp_path / "noconfig").mkdir()
    with pytest.raises(ModelRepositoryError, match="config.pbtxt"):
        list_models(tmp_path)
    (tmp_path / "noconfig").rmdir()
    write_model_config(tmp_path / "dir_name", ModelConfig(name="other_name"))
    with pytest.raises(ModelRepositoryError, match="does not match"):
        list_models(tmp_path)
