"""The Slurm engine without a cluster: the batch script ``--dry-run`` prints, the request checks,
and the parsing of Slurm's records (real formats, copied from Slurm 22.05's output)."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from mlbench.errors import ConfigError
from mlbench.launch.slurm import SlurmSpec, _exit_code, _fields, batch_script, root_cause

from ..e2e.helpers import mlbench

JOBCOMP = (
    "JobId=7 UserId=root(0) GroupId=root(0) Name=mlbench-x JobState=FAILED Partition=multi "
    "TimeLimit=UNLIMITED NodeList=node[1-2] NodeCnt=2 ProcCnt=2 WorkDir=/runs/x "
    "DerivedExitCode=0:0 ExitCode=143:0 "
)


def test_dry_run_prints_the_script_and_submits_nothing(real_data: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    proc = mlbench(
        "run",
        "epsilon-logreg",
        "--set",
        "data.dataset=a9a",
        "--data-dir",
        str(real_data),
        "--engine",
        "slurm",
        "--nodes",
        "3",
        "--gpus-per-node",
        "4",
        "--partition",
        "gpu",
        "--time",
        "01:30:00",
        "--backend",
        "gloo",
        "--runs-dir",
        str(runs),
        "--dry-run",
        home=tmp_path,
        PATH="/usr/bin:/bin",  # no sbatch needed (and none called)
    )
    assert proc.returncode == 0, proc.stderr
    script = proc.stdout
    assert not runs.exists() or not any(runs.iterdir())  # nothing created
    sbatch = [ln.removeprefix("#SBATCH ") for ln in script.splitlines() if ln.startswith("#SBATCH")]
    assert sbatch[1:5] == ["--nodes=3", "--ntasks-per-node=1", "--exclusive", "--gpus-per-node=4"]
    assert "--partition=gpu" in sbatch and "--time=01:30:00" in sbatch
    out = next(o for o in sbatch if o.startswith("--output="))
    assert out.startswith(f"--output={runs.resolve()}/") and out.endswith("/slurm-%j.out")
    assert "MASTER_PORT=$(( 20000 + SLURM_JOB_ID % 20000 ))" in script
    assert "NodeAddr" in script  # the fallback for node names that do not resolve
    srun = script[script.index("srun ") :]
    assert "--kill-on-bad-exit=1" in srun
    agent = shlex.split(srun.replace("\\\n", " "))[-1]  # the bash -c argument, unquoted
    assert '--node-rank "$SLURM_NODEID"' in agent and '--nnodes "$SLURM_NNODES"' in agent
    assert "--nproc-per-node 4 " in agent and "--backend gloo" in agent
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        (SlurmSpec(nodes=0), "--nodes must be at least 1"),
        (SlurmSpec(nodes=1, nproc_per_node=0), "--nproc-per-node"),
        (SlurmSpec(nodes=1, time="soon"), "not a Slurm time limit"),
        (SlurmSpec(nodes=1, partition="a b"), "not a partition name"),
    ],
)
def test_bad_requests_are_refused(spec: SlurmSpec, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        spec.check()


def test_cluster_options_need_the_slurm_engine(tmp_path: Path) -> None:
    proc = mlbench("run", "epsilon-logreg", "--nodes", "2", home=tmp_path)
    assert proc.returncode == 2 and "--nodes need --engine slurm" in proc.stderr


def test_no_gpu_request_without_gpus() -> None:
    script = batch_script(SlurmSpec(nodes=2), Path("/shared/runs/r1"))
    assert "gpus" not in script and "--partition" not in script and "--time" not in script


def test_jobcomp_records_parse() -> None:
    fields = _fields(JOBCOMP)
    assert fields["JobId"] == "7" and fields["JobState"] == "FAILED"
    assert _exit_code(fields["ExitCode"]) == 143
    assert _exit_code("0:15") == 128 + 15 and _exit_code("0:0") == 0 and _exit_code(None) is None


def test_the_root_cause_is_the_failing_ranks_not_its_peers(tmp_path: Path) -> None:
    (tmp_path / "rank-0.stderr").write_text(
        "MLBENCH-ERROR: rank 0: DistBackendError: Connection closed by peer\n"
    )
    (tmp_path / "rank-1.stderr").write_text(
        "Traceback ...\nMLBENCH-ERROR: rank 1: RuntimeError: injected failure\n"
    )
    (tmp_path / "agent-1.stderr").write_text("MLBENCH-ERROR: rank 1 exited with code 1\n")
    assert root_cause(tmp_path) == "rank 1: RuntimeError: injected failure"


def test_an_agent_that_never_started_gives_its_last_line(tmp_path: Path) -> None:
    (tmp_path / "agent-0.stderr").write_text("usage: ...\nmlbench: error: invalid choice\n")
    assert root_cause(tmp_path) == "node 0: mlbench: error: invalid choice"
    assert root_cause(tmp_path / "nothing") is None
