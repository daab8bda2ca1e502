"""Task 1b end to end through the CLI: ``mlbench data prepare imagenet`` then ``mlbench run
imagenet-resnet50`` on 2 real workers, over the test tree of real photographs (flat val +
devkit, with a CMYK, a grayscale and a PNG-named JPEG), with loader processes decoding; a rank
killed mid-epoch resumes from its checkpoint to the uninterrupted run's losses, bit for bit."""

from __future__ import annotations

from pathlib import Path

from mlbench.telemetry.events import read_events
from tests.support.resume import losses_by_step

from .helpers import leftover_workers, mlbench, only_run_dir, read_result

SMALL = [
    "--workers", "2",
    "--oversubscribe",  # 2 ranks + 2 decoding processes on this 2-core machine
    "--set", "data.batch_size=4",
    "--set", "data.val_batch_size=8",
    "--set", "data.image_size=32",
    "--set", "data.resize_size=36",
    "--set", "data.workers=1",  # one spawned decoding process per rank
    "--set", "model.width=8",
    "--set", "train.max_steps=12",
    "--set", "train.max_epochs=5",
    "--set", "train.eval_every_steps=6",
    "--set", "train.stop_at_goal=false",
    "--set", "train.log_every_steps=1",
    "--set", "train.log_every_seconds=0",
]  # fmt: skip


def _prepare(source: Path, data: Path, home: Path) -> None:
    proc = mlbench(
        "data", "prepare", "imagenet", "--source", str(source), "--out", str(data), "--workers",
        "1", home=home,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (data / "imagenet" / "manifest.json").is_file()


def test_prepare_then_run_on_two_workers(imagenet_tree: object, tmp_path: Path) -> None:
    data, runs = tmp_path / "data", tmp_path / "runs"
    _prepare(imagenet_tree.root, data, tmp_path)  # type: ignore[attr-defined]
    proc = mlbench(
        "run", "imagenet-resnet50", "--data-dir", str(data), "--runs-dir", str(runs), *SMALL,
        home=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    run_dir = only_run_dir(runs)
    result = read_result(run_dir)
    assert result["state"] == "finished" and result["task"] == "imagenet-resnet50"
    summary = result["ranks"][0]
    assert summary["steps"] == 12
    # every validation image counted once over both ranks (20 in the tree)
    assert summary["final_metrics"]["samples"] == 20
    # the batch the task resolved is in the events, and decoding was charged to `data`
    events = read_events(run_dir / "rank-0.jsonl")
    recorded = {e["name"]: e["value"] for e in events if e["kind"] == "event"}
    assert recorded.get("batch_size") == 4 and recorded.get("decode_on_device") == 0
    assert summary["phases"]["data"] > 0
    assert not leftover_workers(run_dir)


def test_loader_processes_count_in_the_core_budget(real_data: Path, tmp_path: Path) -> None:
    """Asking for more decoding processes than the cores hold beside the ranks is one line,
    exit 2, nothing started (unset, ``data.workers`` is 0 on a CPU: the conformance row and
    the CLI's --oversubscribe runs above are the other side)."""
    import os

    cores = os.cpu_count() or 1  # what the launcher counts
    runs = tmp_path / "runs"
    proc = mlbench(
        "run", "imagenet-resnet50", "--data-dir", str(real_data), "--runs-dir", str(runs),
        "--workers", "2", "--set", f"data.workers={cores}", home=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "loader" in proc.stderr and "--oversubscribe" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not runs.exists()


def test_killed_rank_resumes_to_the_same_losses(real_data: Path, tmp_path: Path) -> None:
    """The prepared tree in ``real_data`` (tests/conftest.py); a checkpoint every 4 steps, rank 1
    killed at step 6, one restart: per-step losses and final metrics equal a clean run's."""
    common = [
        "--data-dir", str(real_data), *SMALL, "--set", "train.checkpoint_every_steps=4",
    ]  # fmt: skip
    clean = tmp_path / "clean"
    proc = mlbench("run", "imagenet-resnet50", "--runs-dir", str(clean), *common, home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    faulty = tmp_path / "faulty"
    proc = mlbench(
        "run", "imagenet-resnet50", "--runs-dir", str(faulty), *common,
        "--fault", "kill:rank=1,step=6", "--max-restarts", "1", home=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    a, b = only_run_dir(clean), only_run_dir(faulty)
    for rank in (0, 1):
        assert losses_by_step(a, rank) == losses_by_step(b, rank)
    sa, sb = read_result(a)["ranks"][0], read_result(b)["ranks"][0]
    assert sa["final_metrics"] == sb["final_metrics"]
    assert [r["resumed_from_step"] for r in sb["restarts"]] == [4]
    assert len(losses_by_step(a, 0)) == 12
    assert not leftover_workers(b)
