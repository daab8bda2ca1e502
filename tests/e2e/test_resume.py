"""``mlbench run --resume RUN_DIR`` end to end: a 2a run on 2 real workers, cut back to a crash
after its checkpoint, continued through the CLI, gives the uninterrupted run's per-step losses
and final metrics bit for bit, with the restart and its cost in result.json; and every request
``--resume`` cannot honour is one line, exit 2, with nothing started."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from mlbench.attempts import read_restarts
from tests.support.resume import cut_run, losses_by_step

from .helpers import mlbench, only_run_dir, read_result

RUN = [
    "--workers",
    "2",
    "--set",
    "data.dataset=a9a",
    "--set",
    "data.train_samples=800",  # 8 steps an epoch on each rank
    "--set",
    "data.batch_size=50",
    "--set",
    "train.max_steps=20",
    "--set",
    "train.max_epochs=10",
    "--set",
    "train.eval_every_steps=5",
    "--set",
    "train.stop_at_goal=false",
    "--set",
    "train.checkpoint_every_steps=4",
    "--set",
    "train.log_every_steps=1",
    "--set",
    "train.log_every_seconds=0",
]


def test_cli_resume_continues_exactly(real_data: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    proc = mlbench(
        "run", "epsilon-logreg", "--data-dir", str(real_data), *RUN, "--runs-dir", str(runs),
        home=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    full = only_run_dir(runs)
    original = read_result(full)
    # the checkpoint keys are run control: the run stays as official as it was
    differences = original["official_differences"]
    assert "data.dataset" in differences  # a9a: non-official, but not because of checkpoints
    assert not [k for k in differences if k.startswith(("train.checkpoint", "train.log"))]
    # kept: the last two complete checkpoints (4 and 8 were pruned)
    assert sorted(p.name for p in (full / "checkpoints").iterdir()) == ["step-12", "step-16"]

    # a finished run is not resumed
    again = mlbench("run", "--resume", str(full), home=tmp_path)
    assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1
    assert "already finished" in again.stderr

    # a crash at step 14, after the checkpoint at 12 (inside the second epoch); same name,
    # so the run id in the appended events is the run's
    cut = cut_run(full, tmp_path / "crashed" / full.name, keep=12, crash=14)
    config_before = (cut / "config.json").read_bytes()
    ended = max(
        json.loads(p.read_text().splitlines()[-1])["time"] for p in cut.glob("rank-*.jsonl")
    )
    proc = mlbench("run", "--resume", str(cut), home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (cut / "config.json").read_bytes() == config_before
    assert "restarts" in proc.stdout and "(lost work + downtime)" in proc.stdout  # the table

    resumed = read_result(cut)
    assert resumed["state"] == "finished"
    for rank in (0, 1):
        expected = losses_by_step(full, rank)
        assert sorted(expected) == list(range(1, 21))
        assert losses_by_step(cut, rank) == expected  # bitwise, steps 13–20 redone
    s, o = resumed["summary"], original["summary"]
    for key in ("steps", "epochs", "samples", "bytes_sent", "final_metrics", "stop_reason"):
        assert s[key] == o[key], key

    [restart] = read_restarts(cut)
    assert restart.by == "user" and restart.reason == "resumed by user"
    assert restart.failed_at == pytest.approx(ended)
    [entry] = s["restarts"]
    assert entry["attempt"] == 1 and entry["by"] == "user"
    assert entry["resumed_from_step"] == 12 and entry["lost_steps"] == 2
    assert entry["lost_train_time_s"] > 0
    # the downtime runs from the crash to the resumed first step: at least the time the
    # resumed attempt needed to start its workers
    assert 0 < entry["downtime_s"] < time.time() - ended
    assert s["restart_cost_s"] == pytest.approx(max(r["restart_cost"] for r in resumed["ranks"]))
    # the clock never paused: the wall clock counts from the first attempt's start, train
    # time includes the restart's cost
    first_start = json.loads((cut / "clock.json").read_text())["started_at"]
    assert s["wall_time"] >= ended - first_start + entry["downtime_s"] - 1.0
    assert s["train_time"] > s["restart_cost_s"] > 0


def _run_dir(tmp_path: Path, *, config: bool, state: str | None, launch: bool = True) -> Path:
    d = tmp_path / "runs" / "some-run"
    d.mkdir(parents=True)
    if config:
        (d / "config.json").write_text("{}\n")
        if launch:
            (d / "run.json").write_text('{"workers": 2, "engine": "local"}\n')
    if state is not None:
        (d / "result.json").write_text(json.dumps({"schema_version": 1, "state": state}))
    return d


@pytest.mark.parametrize(
    ("make", "extra", "needle"),
    [
        (None, [], "is not a run directory"),
        ({"config": False, "state": None}, [], "has no config.json"),
        ({"config": True, "state": "finished"}, [], "already finished"),
        ({"config": True, "state": None, "launch": False}, [], "not started by `mlbench run`"),
        ({"config": True, "state": "failed"}, ["--set", "optim.lr=1"], "--set cannot be given"),
        ({"config": True, "state": "failed"}, ["--workers", "4"], "--workers cannot be given"),
    ],
)
def test_resume_refusals_are_one_line(
    tmp_path: Path, make: dict[str, Any] | None, extra: list[str], needle: str
) -> None:
    target = tmp_path / "nowhere" if make is None else _run_dir(tmp_path, **make)
    proc = mlbench("run", "--resume", str(target), *extra, home=tmp_path)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert len(proc.stderr.strip().splitlines()) == 1 and needle in proc.stderr, proc.stderr
    if make is not None:
        assert not (target / "attempts.jsonl").exists()  # refused before recording a restart


def test_run_without_task_or_resume(tmp_path: Path) -> None:
    proc = mlbench("run", home=tmp_path)
    assert proc.returncode == 2 and "--resume RUN_DIR" in proc.stderr
