"""``mlbench sweep`` for real: task 2a on a9a, runs through the same session as ``mlbench run``,
sweep.json complete, seeds per repeat, and resuming (after edits, after Ctrl-C) runs only what
did not finish."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .helpers import cli_env, leftover_workers, mlbench

SWEEP = ("sweep", "epsilon-logreg", "--set", "data.dataset=a9a", "--goal", "light")
SHORT = ("--set", "train.max_epochs=2")


def _sweep_file(sweeps: Path, sweep_id: str) -> dict[str, Any]:
    return json.loads((sweeps / sweep_id / "sweep.json").read_text())


def _run_dirs(runs: Path) -> dict[str, float]:
    """Run directories by name, with their result.json's mtime (what a rerun would rewrite)."""
    return {d.name: (d / "result.json").stat().st_mtime_ns for d in runs.iterdir() if d.is_dir()}


def test_sweep_of_workers_and_repeats_then_resume(real_data: Path, tmp_path: Path) -> None:
    runs, sweeps = tmp_path / "runs", tmp_path / "sweeps"
    argv = [
        *SWEEP,
        "--data-dir",
        str(real_data),
        *SHORT,
        "--workers",
        "1",
        "2",
        "--repeats",
        "2",
        "--runs-dir",
        str(runs),
        "--sweeps-dir",
        str(sweeps),
        "--sweep-id",
        "t-a9a",
    ]
    proc = mlbench(*argv, home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = _sweep_file(sweeps, "t-a9a")
    assert data["format"] == 1 and data["sweep_id"] == "t-a9a"
    assert data["task"] == "epsilon-logreg" and data["runs_dir"] == str(runs)
    assert data["command"] == ["mlbench", *argv] and data["created"]
    points = data["points"]
    assert [(e["point"], e["workers"], e["repeat"], e["seed"]) for e in points] == [
        ("w1-allreduce", 1, 0, 42),  # every configuration once before any twice
        ("w2-allreduce", 2, 0, 42),
        ("w1-allreduce", 1, 1, 43),  # seed = the task's seed (42) + repeat
        ("w2-allreduce", 2, 1, 43),
    ]
    assert all(e["state"] == "finished" and e["algorithm"] == "allreduce" for e in points)
    assert len({e["run_id"] for e in points}) == 4 and set(_run_dirs(runs)) == {
        e["run_id"] for e in points
    }
    for e in points:
        run_dir = Path(e["run_dir"])
        assert run_dir == runs / e["run_id"]
        result = json.loads((run_dir / "result.json").read_text())
        assert result["world_size"] == e["workers"] and result["state"] == "finished"
        assert result["environment"]["seed"] == e["seed"] == result["config"]["seed"]
        assert result["goal"]["reached"] is True  # a9a reaches the light target in 2 epochs
        launch = json.loads((run_dir / "run.json").read_text())
        assert launch["sweep"] == {"id": "t-a9a", "point": e["point"], "repeat": e["repeat"]}
    assert "4/4 runs finished" in proc.stdout and "w2-allreduce" in proc.stdout

    # the same command again: everything finished, nothing reruns
    before = _run_dirs(runs)
    again = mlbench(*argv, home=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "0 of 4 runs to go" in again.stderr
    assert _run_dirs(runs) == before

    # a run recorded as failed is run again by --resume, and only it (the interrupted sweep's
    # test below covers cancelled and never-started runs)
    points[1].update(state="failed", reason="test")
    (sweeps / "t-a9a" / "sweep.json").write_text(json.dumps(data))
    proc = mlbench("sweep", "--resume", "t-a9a", "--sweeps-dir", str(sweeps), home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    after = _run_dirs(runs)
    resumed = _sweep_file(sweeps, "t-a9a")["points"]
    assert all(e["state"] == "finished" for e in resumed)
    assert set(after) - set(before) == {resumed[1]["run_id"]}
    assert resumed[1]["attempts"] == [points[1]["run_id"]]
    for i in (0, 2, 3):  # untouched: same run, same files
        assert resumed[i]["run_id"] == points[i]["run_id"]
        assert after[points[i]["run_id"]] == before[points[i]["run_id"]]
    result = json.loads((runs / resumed[1]["run_id"] / "result.json").read_text())
    assert result["config"]["seed"] == resumed[1]["seed"] == 42


def test_interrupted_sweep_resumes_only_the_missing_runs(real_data: Path, tmp_path: Path) -> None:
    runs, sweeps = tmp_path / "runs", tmp_path / "sweeps"
    argv = [*SWEEP, "--data-dir", str(real_data), *SHORT, "--workers", "1", "--repeats", "3"]
    argv += ["--runs-dir", str(runs), "--sweeps-dir", str(sweeps), "--sweep-id", "t-int"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlbench.cli.main", *argv],
        env=cli_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while True:  # Ctrl-C once the first run finished and the second is under way
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        try:
            points = _sweep_file(sweeps, "t-int")["points"]
        except (FileNotFoundError, ValueError):
            points = []
        if points and points[0]["state"] == "finished" and points[1]["run_id"]:
            break
        time.sleep(0.05)
    time.sleep(1.0)  # its workers started
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "--resume t-int" in err
    points = _sweep_file(sweeps, "t-int")["points"]
    assert [e["state"] for e in points] == ["finished", "cancelled", "pending"]
    assert points[2]["run_id"] is None
    cancelled = Path(points[1]["run_dir"])
    assert json.loads((cancelled / "result.json").read_text())["state"] == "cancelled"
    assert leftover_workers(cancelled) == []
    before = _run_dirs(runs)

    proc2 = mlbench("sweep", "--resume", "t-int", "--sweeps-dir", str(sweeps), home=tmp_path)
    assert proc2.returncode == 0, proc2.stderr
    assert "2 of 3 runs to go" in proc2.stderr
    resumed = _sweep_file(sweeps, "t-int")["points"]
    assert [e["state"] for e in resumed] == ["finished"] * 3
    assert resumed[0]["run_id"] == points[0]["run_id"]
    after = _run_dirs(runs)
    assert after[points[0]["run_id"]] == before[points[0]["run_id"]]  # not rerun
    assert len(set(after) - set(before)) == 2  # the cancelled one again, and the missing one
    assert resumed[1]["attempts"] == [points[1]["run_id"]]
    assert [e["seed"] for e in resumed] == [42, 43, 44]
