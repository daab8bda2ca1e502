"""CUDA path: nccl backend, device placement and synchronised phase timing (needs a GPU)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlbench.telemetry.events import read_events

from .helpers import mlbench, only_run_dir, read_result

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.gpu

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _data_dir(real_data: Path) -> Path:
    return Path(os.environ.get("MLBENCH_GPU_DATA", real_data))


@needs_cuda
@pytest.mark.parametrize("task", ["cifar10-resnet20", "epsilon-logreg"])
def test_single_gpu_nccl_run(real_data: Path, tmp_path: Path, task: str) -> None:
    runs = tmp_path / "runs"
    extra = ["--set", "data.dataset=a9a"] if task == "epsilon-logreg" else []
    proc = mlbench(
        "run",
        task,
        "--workers",
        "1",
        "--backend",
        "nccl",
        "--data-dir",
        str(_data_dir(real_data)),
        "--set",
        "train.max_steps=30",
        "--set",
        "train.log_every_steps=10",
        "--runs-dir",
        str(runs),
        *extra,
        home=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    run_dir = only_run_dir(runs)
    result = read_result(run_dir)
    assert result["backend"] == "nccl" and result["state"] == "finished"
    assert result["environment"]["gpu_model"]
    rank = result["ranks"][0]
    in_steps = sum(
        rank["phases"][p] for p in ("data", "forward", "backward", "communication", "optimizer")
    )
    assert in_steps == pytest.approx(rank["train_time"], rel=0.05)
    assert read_events(run_dir / "rank-0.jsonl")


@needs_cuda
def test_more_nccl_workers_than_gpus_is_refused(real_data: Path, tmp_path: Path) -> None:
    n = torch.cuda.device_count() + 1
    proc = mlbench(
        "run",
        "epsilon-logreg",
        "--workers",
        str(n),
        "--backend",
        "nccl",
        "--data-dir",
        str(_data_dir(real_data)),
        "--set",
        "data.dataset=a9a",
        home=tmp_path,
    )
    assert proc.returncode == 2 and "needs one GPU per worker" in proc.stderr
