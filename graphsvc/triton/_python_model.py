"""Generic Triton Python-backend model: runs a TorchScript (or ONNX) file.

`graphsvc triton serve` copies this file as `<version>/model.py` into the runtime
repository it generates from the user's model repository. It is executed by the Python
backend stub, not imported by graphsvc, so it imports nothing from graphsvc.

The runtime config carries these parameters (written by graphsvc.triton.runtime_repository):
  graphsvc_source_format   "torchscript" | "onnx"
  graphsvc_model_file      file name inside the version directory (e.g. model.pt)

TorchScript conventions, as Triton's libtorch backend has them:
  * inputs: when every config input names an argument of `forward()`, by name; else when
    every name ends in `__<index>` (`input__0`, `x__1`), by that index; else in config order;
  * outputs: a dict maps by output name; a tensor or tuple/list maps by the `__<index>`
    suffix of every output name when all have one (`output__1` = the second value), else
    in config order.
ONNX: inputs and outputs by name (the names in config.pbtxt are the graph's names).

Threads: GRAPHSVC_TRITON_THREADS sets torch's intra-op threads per model instance;
default: the usable cores divided by the model's instance count (at least 1).
"""

from __future__ import annotations

import json
import os
import re

import numpy as np
import triton_python_backend_utils as pb_utils


def _param(config: dict, key: str, default: str = "") -> str:
    value = config.get("parameters", {}).get(key)
    if isinstance(value, dict):
        return value.get("string_value", default)
    return default


_INDEXED = re.compile(r"^.+__(\d+)$")


def _indices(names: list) -> list | None:
    """[N for each `<name>__<N>`] when every name has a distinct index, else None."""
    matches = [_INDEXED.match(name) for name in names]
    if not names or not all(matches):
        return None
    indices = [int(m.group(1)) for m in matches]
    return indices if len(set(indices)) == len(indices) else None


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _thread_count(config: dict) -> int:
    # graphsvc.settings.TRITON_THREADS, read by hand: this file runs in Triton's stub, not in graphsvc
    env = os.environ.get("GRAPHSVC_TRITON_THREADS", "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            pass
    instances = sum(int(group.get("count", 1) or 1) for group in config.get("instance_group", [])) or 1
    return max(1, _cpu_count() // instances)


class TritonPythonModel:
    def initialize(self, args):
        self.config = json.loads(args["model_config"])
        self.name = args["model_name"]
        self.batched = int(self.config.get("max_batch_size", 0) or 0) > 0
        self.inputs = [(t["name"], bool(t.get("optional", False))) for t in self.config.get("input", [])]
        self.outputs = [
            (t["name"], pb_utils.triton_string_to_numpy(t["data_type"])) for t in self.config.get("output", [])
        ]
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        filename = _param(self.config, "graphsvc_model_file", "model.pt")
        path = os.path.join(version_dir, filename)
        self.format = _param(self.config, "graphsvc_source_format", "torchscript")
        threads = _thread_count(self.config)
        if self.format == "onnx":
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            self.session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
            self._run = self._run_onnx
        else:
            import torch

            self.torch = torch
            torch.set_num_threads(threads)
            try:
                torch.set_num_interop_threads(1)
            except RuntimeError:
                pass  # already set in this process
            self.module = torch.jit.load(path, map_location="cpu")
            self.module.eval()
            self._bind_torch_signature()
            self._run = self._run_torch

    def _bind_torch_signature(self) -> None:
        names = [name for name, _ in self.inputs]
        try:
            arguments = [a.name for a in self.module.forward.schema.arguments][1:]  # without self
        except (AttributeError, RuntimeError):
            arguments = []
        self.input_keywords = bool(names) and all(name in arguments for name in names)
        order = None if self.input_keywords else _indices(names)
        # position k of forward() receives config input order[k]
        self.input_order = sorted(range(len(names)), key=lambda i: order[i]) if order else list(range(len(names)))
        self.output_indices = _indices([name for name, _ in self.outputs])

    # -- running one batch --------------------------------------------------------------

    def _run_torch(self, arrays: list) -> list:
        torch = self.torch
        tensors = []
        for array in arrays:
            if array is None:
                tensors.append(None)
                continue
            if not array.flags.writeable or not array.flags.c_contiguous:
                array = np.array(array, copy=True, order="C")
            tensors.append(torch.from_numpy(array))
        with torch.inference_mode():
            if self.input_keywords:
                result = self.module(**{name: t for (name, _), t in zip(self.inputs, tensors) if t is not None})
            else:
                result = self.module(*[tensors[i] for i in self.input_order])
        if isinstance(result, dict):
            missing = [name for name, _ in self.outputs if name not in result]
            if missing:
                raise ValueError(f"model returned no output named {', '.join(missing)}")
            result = [result[name] for name, _ in self.outputs]
        else:
            if not isinstance(result, (tuple, list)):
                result = [result]
            if self.output_indices is not None:
                if max(self.output_indices) >= len(result):
                    raise ValueError(f"model returned {len(result)} outputs, config names output index "
                                     f"{max(self.output_indices)}")
                result = [result[i] for i in self.output_indices]
            elif len(result) != len(self.outputs):
                raise ValueError(f"model returned {len(result)} outputs, config declares {len(self.outputs)}")
        out = []
        for value in result:
            if isinstance(value, torch.Tensor):
                value = value.detach().cpu().numpy()
            out.append(np.asarray(value))
        return out

    def _run_onnx(self, arrays: list) -> list:
        feed = {name: array for (name, _), array in zip(self.inputs, arrays) if array is not None}
        return list(self.session.run([name for name, _ in self.outputs], feed))

    def _response(self, values: list):
        tensors = []
        for (name, dtype), value in zip(self.outputs, values):
            if dtype is not None and dtype is not np.object_ and value.dtype != dtype:
                value = value.astype(dtype)
            tensors.append(pb_utils.Tensor(name, np.ascontiguousarray(value)))
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def _arrays(self, request) -> list:
        arrays = []
        for name, optional in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                if not optional:
                    raise ValueError(f"missing input '{name}'")
                arrays.append(None)
            else:
                arrays.append(tensor.as_numpy())
        return arrays

    def _error(self, exc: Exception):
        return pb_utils.InferenceResponse(
            error=pb_utils.TritonError(f"model '{self.name}': {type(exc).__name__}: {exc}")
        )

    # -- Triton entry points ------------------------------------------------------------

    def execute(self, requests):
        responses: list = [None] * len(requests)
        per_request = []
        try:
            per_request = [self._arrays(r) for r in requests]
        except Exception as exc:  # noqa: BLE001 — reported to the client
            return [self._error(exc) for _ in requests]

        if self.batched and len(requests) > 1 and self._can_concatenate(per_request):
            try:
                sizes = [next(a for a in arrays if a is not None).shape[0] for arrays in per_request]
                joined = [
                    np.concatenate([arrays[i] for arrays in per_request], axis=0)
                    for i in range(len(self.inputs))
                ]
                outputs = self._run(joined)
                offsets = np.cumsum([0] + sizes)
                if any(value.ndim == 0 or value.shape[0] != offsets[-1] for value in outputs):
                    raise ValueError("outputs do not keep the batch dimension")
                for k in range(len(requests)):
                    lo, hi = offsets[k], offsets[k + 1]
                    responses[k] = self._response([value[lo:hi] for value in outputs])
                return responses
            except Exception:  # noqa: BLE001 — fall back to one request at a time
                pass

        for k, arrays in enumerate(per_request):
            try:
                responses[k] = self._response(self._run(arrays))
            except Exception as exc:  # noqa: BLE001 — reported to the client
                responses[k] = self._error(exc)
        return responses

    def _can_concatenate(self, per_request: list) -> bool:
        """All inputs present in every request, with equal non-batch shapes."""
        for i in range(len(self.inputs)):
            column = [arrays[i] for arrays in per_request]
            if any(a is None or a.ndim == 0 for a in column):
                return False
            first = column[0]
            if any(a.shape[1:] != first.shape[1:] or a.dtype != first.dtype for a in column):
                return False
        return True

    def finalize(self):
        self.module = None
        self.session = None
