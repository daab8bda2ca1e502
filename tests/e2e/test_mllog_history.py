"""Real short runs exported as MLPerf logs (checked by MLCommons' compliance checker) and
followed across versions with ``mlbench history`` — from run directories and from a real master.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlbench.results import mllog

from ..server.master import Master
from .helpers import mlbench, only_run_dir

A9A_LIGHT = ["--goal", "light", "--set", "data.dataset=a9a", "--set", "train.log_every_seconds=0"]


def _run(tmp_path: Path, runs: Path, data: Path, *extra: str, task: str = "epsilon-logreg") -> Path:
    before = set(runs.iterdir()) if runs.exists() else set()
    proc = mlbench(
        "run", task, "--workers", "2", "--data-dir", str(data), "--runs-dir", str(runs), *extra,
        home=tmp_path,
    )  # fmt: skip
    assert proc.returncode in (0, 1), proc.stderr  # 1: finished without reaching the target
    (new,) = set(runs.iterdir()) - before
    return new


@pytest.fixture(scope="module")
def a9a_runs(real_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two real 2a runs that reach the light goal and one that stops after 5 steps (misses)."""
    home = tmp_path_factory.mktemp("home")
    runs = home / "runs"
    return {
        "r1": _run(home, runs, real_data, *A9A_LIGHT),
        "r2": _run(home, runs, real_data, *A9A_LIGHT),
        # train.max_steps is an open key: same configuration, a run that missed the target
        "missed": _run(home, runs, real_data, *A9A_LIGHT, "--set", "train.max_steps=5"),
    }


def test_real_2a_run_exports_and_passes_the_common_rules(
    a9a_runs: dict[str, Path], tmp_path: Path
) -> None:
    """2a has no MLPerf benchmark: checked against ruleset 0.7.0's common rules (every
    structural rule) with only the benchmark-name rule relaxed (mllog.check)."""
    out = tmp_path / "2a.log"
    proc = mlbench("export", "mllog", str(a9a_runs["r1"]), "--out", str(out), "--check",
                   home=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "common rules (no MLPerf benchmark): passed" in proc.stdout
    keys = [json.loads(line.split(" ", 1)[1])["key"] for line in out.read_text().splitlines()]
    assert keys.count("eval_accuracy") >= 1 and keys[-1] == "run_stop"
    assert '"status": "success"' in out.read_text().splitlines()[-1]
    # the run that missed the target: aborted, and still a structurally valid log
    missed = mllog.export(a9a_runs["missed"], tmp_path / "missed.log")
    assert '"status": "aborted"' in missed.read_text().splitlines()[-1]
    assert mllog.check(missed)[0]


def test_real_4a_run_passes_mlperf_gnmt_rules_but_the_quality_target(
    real_data: Path, tmp_path: Path
) -> None:
    """4a = MLPerf Training v0.7's GNMT. A short CPU run cannot reach BLEU 24, so MLCommons'
    checker (run as its documentation says) must fail it on that rule and on no other."""
    runs = tmp_path / "runs"
    tiny = [
        "model.hidden_size=16", "model.layers=2", "data.global_batch=32", "data.batch_size=16",
        "data.val_samples=12", "decode.max_len=12", "data.train_samples=640",
        "train.max_steps=6", "train.eval_every_steps=3",
    ]  # fmt: skip
    args = [a for o in tiny for a in ("--set", o)]
    run = _run(tmp_path, runs, real_data, *args, task="wmt16-gnmt")
    assert only_run_dir(runs) == run
    log = mllog.export(run, tmp_path / "gnmt.log")
    assert mllog.ruleset_for(log) == ("0.7.0", "gnmt")
    proc = subprocess.run(
        [sys.executable, "-m", "mlperf_logging.compliance_checker", "--usage", "training",
         "--ruleset", "0.7.0", "--log_output", str(tmp_path / "cc.log"), str(log)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    failures = [m for m in out.split("-" * 30) if "FAILED" not in m and m.strip()]
    assert "Failed checks for eval_accuracy : v['value'] >= 0.240" in out, out
    assert not [m for m in failures if "eval_accuracy" not in m and "Logging output" not in m], out


def _as_older_version(src: Path, dest: Path) -> Path:
    """A copy of a real run whose result.json says an older mlbench made it: only
    ``environment.packages.mlbench``, ``git_commit`` and ``git_commit_time`` are edited (the
    measurements are the real run's), because no older mlbench is installed to run."""
    shutil.copytree(src, dest)
    result = json.loads((dest / "result.json").read_text())
    env = result["environment"]
    env["packages"]["mlbench"] = "0.0.9"
    env["git_commit"] = "0" * 40
    env["git_commit_time"] = "2000-01-01T00:00:00+00:00"
    result["run_id"] = dest.name
    (dest / "result.json").write_text(json.dumps(result))
    return dest


def _history(tmp_path: Path, *args: str, **env: str) -> tuple[int, list[dict]]:
    proc = mlbench("history", "epsilon-logreg", "--set", "data.dataset=a9a", "--goal", "light",
                   "--json", *args, home=tmp_path, **env)  # fmt: skip
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_history_flags_a_missed_target_not_an_equal_rerun(
    a9a_runs: dict[str, Path], tmp_path: Path
) -> None:
    """The same real runs as an "old" (edited copies) and a "new" version: same medians, no
    flag. A new version whose real run missed the target: its time-to-target is infinite,
    beyond the old version's min–max — a regression."""
    same, flagged = tmp_path / "same", tmp_path / "flagged"
    for d in (same, flagged):
        for name in ("r1", "r2"):
            _as_older_version(a9a_runs[name], d / f"old-{name}")
    for name in ("r1", "r2"):
        shutil.copytree(a9a_runs[name], same / name)
    shutil.copytree(a9a_runs["missed"], flagged / "missed")
    code, series = _history(tmp_path, "--runs-dir", str(same))
    (s,) = series
    assert [v["version"].split("+")[0] for v in s["versions"]] == ["0.0.9", "0.1.0"]
    assert s["verdicts"]["time_to_target"]["verdict"] == "same" and code == 0
    code, series = _history(tmp_path, "--runs-dir", str(flagged))
    (s,) = series
    assert s["versions"][-1]["missed"] == 1
    assert s["verdicts"]["time_to_target"]["verdict"] == "regression" and code == 1
    # another configuration is another series: nothing of this task's light/a9a runs matches
    proc = mlbench("history", "epsilon-logreg", "--set", "data.batch_size=7",
                   "--runs-dir", str(same), home=tmp_path)  # fmt: skip
    assert proc.returncode == 2 and "no finished runs" in proc.stderr


def test_imported_runs_show_in_the_masters_history(
    a9a_runs: dict[str, Path], master: Master, tmp_path: Path
) -> None:
    env = {"MLBENCH_TOKEN": master.token}
    for name in ("r1", "r2", "missed"):
        proc = mlbench("import", str(a9a_runs[name]), "--master", master.url, home=tmp_path, **env)
        assert proc.returncode == 0, proc.stderr
    local = tmp_path / "local"
    for name in ("r1", "r2", "missed"):
        shutil.copytree(a9a_runs[name], local / name)
    _, from_master = _history(tmp_path, "--master", master.url, **env)
    _, from_dirs = _history(tmp_path, "--runs-dir", str(local))
    assert from_master and from_master[0]["versions"][0]["repeats"] == 3
    for s in (from_master, from_dirs):
        for v in s[0]["versions"]:
            v["run_ids"].sort()
    assert from_master == from_dirs
