"""Models, a model repository and /proc helpers shared by the tests against the real tritonserver."""

from __future__ import annotations

from pathlib import Path

import torch

from graphsvc.models.repository import input_tensor, model_config, output_tensor, write_model_config


class AddMul(torch.nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor):
        return x + y, x * y


class Points(torch.nn.Module):
    def forward(self, points: torch.Tensor, scale: torch.Tensor):
        scaled = points * scale.to(points.dtype)
        count = torch.full((1,), points.shape[0], dtype=torch.int64) * scale
        return scaled, count


def make_repository(root: Path) -> dict[str, torch.jit.ScriptModule]:
    modules = {"addmul": torch.jit.script(AddMul()), "points": torch.jit.script(Points())}
    (root / "addmul" / "1").mkdir(parents=True)
    modules["addmul"].save(str(root / "addmul" / "1" / "model.pt"))
    write_model_config(
        root / "addmul",
        model_config(
            "addmul",
            max_batch_size=8,
            dynamic_batching=True,
            max_queue_delay_microseconds=2000,
            inputs=[input_tensor("x__0", "TYPE_FP32", [4]), input_tensor("y__1", "TYPE_FP32", [4])],
            outputs=[output_tensor("sum__0", "TYPE_FP32", [4]), output_tensor("prod__1", "TYPE_FP32", [4])],
        ),
    )
    (root / "points" / "1").mkdir(parents=True)
    modules["points"].save(str(root / "points" / "1" / "model.pt"))
    write_model_config(
        root / "points",
        model_config(
            "points",
            max_batch_size=0,
            inputs=[input_tensor("points", "TYPE_FP32", [-1, 3]), input_tensor("scale", "TYPE_INT64", [1])],
            outputs=[output_tensor("scaled", "TYPE_FP32", [-1, 3]), output_tensor("count", "TYPE_INT64", [1])],
        ),
    )
    return modules


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"

