"""End-to-end: ``mlbench run --fault`` on 2 real gloo workers training task 2a on a9a — a kill that
fails fast or is restarted (``--max-restarts``), a hang the watchdog ends, a straggler the summary
flags, Ctrl-C in the middle of a restart."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlbench.attempts import read_restarts
from mlbench.train.checkpoint import read_clock
from tests.support.resume import losses_by_step

from .helpers import a9a_args, cli_env, leftover_workers, mlbench, only_run_dir, read_result


def _run_2a(real_data: Path, runs: Path, *extra: str, home: Path) -> subprocess.CompletedProcess:
    return mlbench(
        *_args(real_data, runs, *extra),
        home=home,
        timeout=120,
    )


def _args(real_data: Path, runs: Path, *extra: str) -> list[str]:
    return a9a_args(real_data, runs, "--set", "train.max_steps=200", *extra)


def _fault_lines(run_dir: Path, rank: int) -> list[str]:
    text = (run_dir / f"rank-{rank}.stderr").read_text()
    return [ln for ln in text.splitlines() if ln.startswith("MLBENCH-FAULT:")]


def test_a_killed_rank_fails_the_run_fast_naming_rank_and_fault(
    real_data: Path, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    proc = _run_2a(real_data, runs, "--fault", "kill:rank=1,step=30", home=tmp_path)
    assert proc.returncode == 1, proc.stderr
    run_dir = only_run_dir(runs)
    result = read_result(run_dir)
    assert result["state"] == "failed"
    assert "rank 1 was killed by SIGKILL" in result["reason"], result["reason"]
    assert "kill:rank=1,step=30" in result["reason"] and "after step 30" in result["reason"]
    # recorded, and never official
    assert result["faults"] == [
        {"spec": "kill:rank=1,step=30", "kind": "kill", "rank": 1, "step": 30}
    ]
    assert json.loads((run_dir / "run.json").read_text())["faults"] == result["faults"]
    assert result["official"] is False
    assert "fault injected: kill:rank=1,step=30" in result["official_differences"]
    assert not read_restarts(run_dir)  # --max-restarts 0: fail fast, as before
    assert 0 < result["summary"]["steps"] <= 30  # the logged windows before the kill are kept
    assert not leftover_workers(run_dir)


def test_a_rank_killed_after_a_time_fails_the_run(real_data: Path, tmp_path: Path) -> None:
    """``after=T`` counts from the rank's first step: 0.3 s into a run of 20000 steps (~0.3 ms
    each alone, several seconds in all), far from its end."""
    runs = tmp_path / "runs"
    proc = _run_2a(
        real_data,
        runs,
        "--fault",
        "kill:rank=0,after=300ms",
        "--set",
        "train.max_steps=20000",
        "--set",
        "train.max_epochs=100",
        home=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr
    result = read_result(only_run_dir(runs))
    assert "rank 0 was killed by SIGKILL" in result["reason"], result["reason"]
    assert (
        "kill:rank=0,after=0.3s" in result["reason"] and "0.3 s into training" in result["reason"]
    )
    assert 0 < result["summary"]["steps"] < 20000


def test_restart_after_an_injected_kill_with_the_time_accounted(
    real_data: Path, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    start = time.time()
    proc = _run_2a(
        real_data, runs, "--fault", "kill:rank=1,step=30", "--max-restarts", "1", home=tmp_path
    )
    end = time.time()
    assert proc.returncode == 0, proc.stderr
    run_dir = only_run_dir(runs)
    result = read_result(run_dir)
    assert result["state"] == "finished" and result["reason"] is None
    assert result["summary"]["steps"] == 200 and result["summary"]["stop_reason"] == "max_steps"
    # one engine restart, for the kill's reason, seen after the run started and before it ended
    (restart,) = read_restarts(run_dir)
    assert restart.by == "engine" and restart.attempt == 1
    assert "rank 1 was killed by SIGKILL" in restart.reason
    assert "kill:rank=1,step=30" in restart.reason
    created = json.loads((run_dir / "run.json").read_text())["created"]
    assert created < restart.failed_at <= restart.restarted_at < end
    assert restart.restarted_at - restart.failed_at < 10  # stop the peer (≤ grace) and respawn
    # the fault fired in the first attempt only: one kill, not one per attempt
    assert len(_fault_lines(run_dir, 1)) == 1
    assert not _fault_lines(run_dir, 0)
    # the clock never pauses: the run's wall time counts from the first attempt's start
    # (RUN/clock.json), so it spans the lost attempt, the restart and the attempt that finished;
    # the launcher's also spans the set-up before the first step
    launcher = result["launcher"]
    assert launcher["engine_restarts"] == 1 and launcher["max_restarts"] == 1
    assert launcher["exit_codes"] == [0, 0]
    first_start = read_clock(run_dir)
    assert first_start is not None and created < first_start < restart.failed_at
    assert result["summary"]["wall_time"] > restart.restarted_at - first_start
    assert result["summary"]["wall_time"] <= launcher["wall_time_total"] <= end - start
    assert result["official"] is False
    assert not leftover_workers(run_dir)


def test_an_engine_restart_resumes_from_the_checkpoint_exactly(
    real_data: Path, tmp_path: Path
) -> None:
    """Kill rank 1 after step 30 with a checkpoint every 20 steps and one restart allowed: the
    engine restarts both ranks, they continue from step 20, and the run ends with the same
    per-step losses (bitwise) and final metrics as the same run without the fault. The cost of
    the failure is in the result: the 10 lost steps' train time plus the downtime."""
    common = (
        *("--set", "train.checkpoint_every_steps=20", "--set", "train.max_steps=60"),
        *("--set", "train.log_every_steps=1", "--set", "train.log_every_seconds=0"),
    )
    clean = _run_2a(real_data, tmp_path / "clean", *common, home=tmp_path)
    assert clean.returncode == 0, clean.stderr
    runs = tmp_path / "runs"
    proc = _run_2a(
        real_data,
        runs,
        *common,
        "--fault",
        "kill:rank=1,step=30",
        "--max-restarts",
        "1",
        home=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    run_dir, clean_dir = only_run_dir(runs), only_run_dir(tmp_path / "clean")
    result, reference = read_result(run_dir), read_result(clean_dir)
    assert result["state"] == "finished" and result["summary"]["steps"] == 60
    for rank in (0, 1):
        assert losses_by_step(run_dir, rank) == losses_by_step(clean_dir, rank)
    assert result["summary"]["final_metrics"] == reference["summary"]["final_metrics"]
    (restart,) = read_restarts(run_dir)
    assert restart.by == "engine" and "kill:rank=1,step=30" in restart.reason
    (entry,) = result["summary"]["restarts"]
    assert entry["by"] == "engine" and entry["resumed_from_step"] == 20
    assert entry["lost_steps"] == 10  # steps 21..30 ran, were logged, and were lost
    assert entry["lost_train_time_s"] > 0 and entry["downtime_s"] > 0
    cost = result["summary"]["restart_cost_s"]
    assert cost == pytest.approx(entry["lost_train_time_s"] + entry["downtime_s"], rel=0.5)
    # the clock never paused: train time includes the cost, wall time spans both attempts
    assert result["summary"]["train_time"] > cost > 0
    assert result["summary"]["wall_time"] > restart.restarted_at - restart.failed_at


def test_restarts_spent_fail_with_the_last_root_cause(real_data: Path, tmp_path: Path) -> None:
    """A rank that fails in every attempt (a plug-in that raises at step 3): one restart, then
    the run fails with that reason and says the restarts are spent."""
    runs = tmp_path / "runs"
    proc = mlbench(
        *_args(real_data, runs, "--algorithm", "tests.e2e.faulty:RaiseAtStep"),
        "--max-restarts",
        "1",
        home=tmp_path,
        timeout=120,
        FAULT_RANK="1",
        FAULT_STEP="3",
    )
    assert proc.returncode == 1, proc.stderr
    run_dir = only_run_dir(runs)
    result = read_result(run_dir)
    assert result["state"] == "failed"
    assert result["reason"].startswith("rank 1: RuntimeError: injected failure")
    assert "after 1 restart(s), --max-restarts 1 spent" in result["reason"]
    (restart,) = read_restarts(run_dir)
    assert restart.reason == "rank 1: RuntimeError: injected failure for the test"
    # both attempts ran: the rank's stderr holds the failure twice
    assert (run_dir / "rank-1.stderr").read_text().count("MLBENCH-ERROR: rank 1:") == 2
    # no --fault: restarts alone add no official difference
    assert not [d for d in result["official_differences"] if "fault" in d]
    assert not leftover_workers(run_dir)


def test_the_watchdog_ends_a_hang_naming_the_stalled_rank(real_data: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    timeout = 5
    proc = _run_2a(
        real_data,
        runs,
        "--fault",
        "hang:rank=0,step=20",
        "--set",
        f"train.hang_timeout={timeout}",
        home=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr
    run_dir = only_run_dir(runs)
    result = read_result(run_dir)
    reason = result["reason"]
    assert result["state"] == "failed" and reason.startswith("hang: no training progress"), reason
    assert "rank 0 stalled at step 20 outside any collective" in reason
    assert "hang_forever" in reason  # where it stopped
    assert "waiting in a collective: rank 1 at step 20" in reason
    # ended within the timeout and a few seconds of the hang (not gloo's 300 s), and the run's
    # files were complete by then: the stall was measured from the last step on
    hung_at = (run_dir / "rank-0.stderr").stat().st_mtime  # its last line: the hang's
    assert _fault_lines(run_dir, 0) and "hangs after step 20" in _fault_lines(run_dir, 0)[0]
    ended = (run_dir / "result.json").stat().st_mtime
    assert timeout <= ended - hung_at < timeout + 6
    assert result["summary"]["steps"] == 20
    assert not leftover_workers(run_dir)


def test_a_slow_rank_is_flagged_as_the_straggler(real_data: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    proc = _run_2a(real_data, runs, "--fault", "slow:rank=1,factor=3", "--json", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    st = result["summary"]["stragglers"]
    assert st["flagged"] and st["slowest_rank"] == 1, st
    # factor 3: exact in the unit test; here two ranks share 2 busy cores, and each rank's own
    # compute per step (~0.3 ms) drifts by tens of per cent with the machine's load
    assert 2.0 < st["ratio"] < 6.0, st
    ranks = {r["rank"]: r for r in result["ranks"]}
    # the straggler's peers wait for it in communication: their step time is alike
    assert ranks[0]["phases"]["communication"] > ranks[1]["phases"]["communication"]
    assert ranks[0]["train_time"] == pytest.approx(ranks[1]["train_time"], rel=0.2)
    assert result["official"] is False


def test_ctrl_c_during_a_restart_stops_every_rank(real_data: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    args = _args(real_data, runs, "--fault", "kill:rank=1,step=30", "--max-restarts", "3")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlbench.cli.main", *args],
        env=cli_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 90
    while not list(runs.glob("*/attempts.jsonl")) if runs.exists() else True:
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail("the run was never restarted")
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # the second attempt's ranks are starting up
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    run_dir = only_run_dir(runs)
    result = read_result(run_dir)
    assert result["state"] == "cancelled" and "interrupted" in result["reason"]
    assert len(read_restarts(run_dir)) == 1
    assert not leftover_workers(run_dir)
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--fault", "explode:rank=1"], "unknown fault 'explode'"),
        (["--fault", "kill:rank=2,step=5"], "rank 2 does not exist in a run of 2 worker(s)"),
        (["--fault", "master-down:after=1s,for=2s"], "needs --upload"),
        (["--max-restarts", "-1"], "--max-restarts must be at least 0"),
    ],
)
def test_a_bad_fault_request_is_one_line_before_anything_starts(
    real_data: Path, tmp_path: Path, extra: list[str], needle: str
) -> None:
    runs = tmp_path / "runs"
    proc = _run_2a(real_data, runs, *extra, home=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert not runs.exists() or not list(runs.iterdir())  # no run directory, no worker


def test_a_sweep_checks_its_faults_against_every_point(real_data: Path, tmp_path: Path) -> None:
    proc = mlbench(
        "sweep",
        "epsilon-logreg",
        "--workers",
        "1",
        "2",
        "--data-dir",
        str(real_data),
        "--fault",
        "kill:rank=1,step=5",
        "--dry-run",
        home=tmp_path,
    )
    assert proc.returncode == 2
    assert "rank 1 does not exist in a run of 1 worker(s)" in proc.stderr
