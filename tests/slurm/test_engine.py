"""``mlbench run --engine slurm`` against a real two-node Slurm (tests/slurm/conftest.py): the
generated batch job runs the per-node agent once per emulated node, and the run ends as a local
run would — finished with rank 0's result, failed with the failing rank's own error, or
cancelled by Ctrl-C or by ``scancel``, with nothing left running."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlbench.launch.slurm import JOB_FILE, final_state, queue_state, read_job_id
from mlbench.telemetry.events import read_events

from ..e2e.helpers import cli_env, leftover_workers, mlbench, only_run_dir, read_result
from ..support.slurm import SlurmCluster

A9A = ["epsilon-logreg", "--set", "data.dataset=a9a"]


def _slurm_run(real_data: Path, runs: Path, *extra: str) -> list[str]:
    return [
        "run",
        *A9A,
        "--engine",
        "slurm",
        "--nodes",
        "2",
        "--threads-per-worker",
        "1",  # both emulated nodes are this machine's cores
        "--data-dir",
        str(real_data),
        "--runs-dir",
        str(runs),
        *extra,
    ]


def _assert_job_gone(run_dir: Path) -> str:
    job_id = read_job_id(run_dir)
    assert job_id is not None
    assert queue_state(job_id) is None
    assert not leftover_workers(run_dir)
    return job_id


def test_a_two_node_run_reaches_its_light_goal(
    slurm: SlurmCluster, real_data: Path, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    proc = mlbench(*_slurm_run(real_data, runs, "--goal", "light"), home=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    run_dir = only_run_dir(runs)
    result = read_result(run_dir)
    assert result["state"] == "finished"
    assert result["world_size"] == 2 and result["backend"] == "gloo"
    assert result["goal"]["reached"] is True, result["goal"]
    assert "goal reached" in proc.stdout and "yes" in proc.stdout  # the local summary table
    # both ranks trained, each on its own emulated node
    for rank in (0, 1):
        assert any(r["kind"] == "train" for r in read_events(run_dir / f"rank-{rank}.jsonl"))
    job_id = _assert_job_gone(run_dir)
    assert final_state(job_id) == ("COMPLETED", 0)
    assert f"JobId={job_id} " in slurm.jobcomp.read_text()  # the record final states come from
    script = (run_dir / "slurm.sbatch").read_text()
    assert "#SBATCH --nodes=2" in script and "srun --kill-on-bad-exit=1" in script


def test_a_failing_rank_fails_the_run_with_its_own_error(
    slurm: SlurmCluster, real_data: Path, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    start = time.monotonic()
    proc = mlbench(
        *_slurm_run(real_data, runs, "--algorithm", "tests.e2e.faulty:RaiseAtStep"),
        home=tmp_path,
        timeout=120,
        FAULT_RANK="1",
        FAULT_STEP="3",
    )
    assert proc.returncode == 1, proc.stderr
    run_dir = only_run_dir(runs)
    result = read_result(run_dir)
    assert result["state"] == "failed"
    # the cause, not Slurm's view of it: the job's exit code is the killed peer's
    assert "rank 1" in result["reason"] and "injected failure for the test" in result["reason"]
    state, code = final_state(_assert_job_gone(run_dir)) or ("?", None)
    assert state == "FAILED" and code not in (0, None)
    assert time.monotonic() - start < 60


def _start_long_run(real_data: Path, runs: Path, home: Path) -> subprocess.Popen[str]:
    """A run that trains until stopped; returns once both ranks have logged a training step."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlbench.cli.main",
            *_slurm_run(
                real_data,
                runs,
                "--set",
                "train.stop_at_goal=false",
                "--set",
                "train.max_epochs=10000",
                "--set",
                "train.log_every_steps=1",
            ),
        ],
        env=cli_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        files = list(runs.glob("*/rank-1.jsonl")) if runs.exists() else []
        if files and any(r["kind"] == "train" for r in read_events(files[0])):
            return proc
        time.sleep(0.2)
    proc.kill()
    pytest.fail("training never started under Slurm")


def test_ctrl_c_cancels_the_job(slurm: SlurmCluster, real_data: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    proc = _start_long_run(real_data, runs, tmp_path)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    run_dir = only_run_dir(runs)
    result = read_result(run_dir)
    assert result["state"] == "cancelled" and "interrupted" in result["reason"]
    assert final_state(_assert_job_gone(run_dir)) is not None
    assert "Traceback" not in err


def test_scancel_cancels_the_run(slurm: SlurmCluster, real_data: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    proc = _start_long_run(real_data, runs, tmp_path)
    run_dir = only_run_dir(runs)
    job_id = json.loads((run_dir / JOB_FILE).read_text())["job_id"]
    subprocess.run(["scancel", job_id], check=True)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    result = read_result(run_dir)
    assert result["state"] == "cancelled" and job_id in result["reason"]
    state = final_state(_assert_job_gone(run_dir))
    assert state is not None and state[0] == "CANCELLED"
