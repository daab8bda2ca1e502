"""Slurm engine: one batch job per run, the per-node agent once per node under ``srun``.

What the engine relies on is only what was exercised on a real Slurm (``sbatch``, ``srun``,
``squeue``, ``scontrol``, ``scancel``, job completion records; ``sacct`` when accounting exists —
../shared/reference/CLUSTERS.md §3):

* the run directory is on the cluster's shared filesystem: the login node writes config.json,
  every node's ranks write their event and ``rank-<r>.std*`` files into it, and the session on the
  login node uploads and finalises from it, exactly as for a local run;
* the batch script maps Slurm's allocation to the agent's rendezvous: the master address is the
  first host of ``$SLURM_JOB_NODELIST`` (its ``NodeAddr`` when the name does not resolve, as with
  emulated or oddly named nodes), the port ``20000 + job id % 20000`` — fixed by the job, so every
  node computes the same one without talking to the others, and two jobs sharing a node differ;
* ``srun --kill-on-bad-exit=1`` ends every node's agent when one fails. Slurm then reports the
  *killed* peer's exit code (143), not the cause: the reason comes from the failing rank's
  ``MLBENCH-ERROR:`` line in its stderr file, as with the local engine;
* without accounting, ``scontrol`` forgets a job after MinJobAge (300 s by default), so the final
  state is read from ``scontrol`` while it remembers, then from the job completion log
  (``jobcomp/filetxt``), then from ``sacct``.

The launcher writes ``slurm-job.json`` (job id, script) into the run directory when it submits,
so anything that finds the run later (the master's executor after a restart) finds the job.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlbench.errors import ConfigError, MlbenchError
from mlbench.launch.base import Outcome
from mlbench.launch.worker import ERROR_MARKER

SCRIPT_FILE = "slurm.sbatch"
JOB_FILE = "slurm-job.json"
PYTHON_ENV = "MLBENCH_SLURM_PYTHON"
#: how often the job's state is asked of slurmctld (every squeue is an RPC to the controller)
QUERY_SECONDS = 0.5
#: states in which the job may still run (or is still cleaning up its steps)
ACTIVE_STATES = frozenset(
    {
        "PENDING",
        "CONFIGURING",
        "RUNNING",
        "COMPLETING",
        "SUSPENDED",
        "REQUEUED",
        "RESIZING",
        "SIGNALING",
        "STAGE_OUT",
        "STOPPED",
        "RESV_DEL_HOLD",
        "REQUEUE_FED",
        "REQUEUE_HOLD",
    }
)
# fragments of the errors a rank sees when a *peer* vanished mid-collective (as launch/local.py)
_PEER_LOSS = ("DistBackendError", "Connection closed", "Connection reset", "Broken pipe", "gloo")
_TIME = re.compile(r"^(\d+-)?\d+(:\d+){0,2}$|^UNLIMITED$|^INFINITE$")
_PARTITION = re.compile(r"^[A-Za-z0-9_.,-]+$")


class SlurmError(MlbenchError):
    """A Slurm command refused the request or is missing (its own words)."""


@dataclass
class SlurmSpec:
    """What the user asked of Slurm. ``nproc_per_node`` ranks run on each of ``nodes`` nodes."""

    nodes: int
    nproc_per_node: int = 1
    gpus_per_node: int = 0
    partition: str | None = None
    time: str | None = None
    backend: str = "auto"
    #: torch threads per rank; None: the node's CPUs (``$SLURM_CPUS_ON_NODE``) / ranks per node
    threads_per_worker: int | None = None
    #: the Python with mlbench on the compute nodes: $MLBENCH_SLURM_PYTHON, else this one's path
    #: (the same venv on the shared filesystem, the usual cluster setup)
    python: str = field(default_factory=lambda: os.environ.get(PYTHON_ENV) or sys.executable)

    @property
    def workers(self) -> int:
        return self.nodes * self.nproc_per_node

    def check(self) -> None:
        if self.nodes < 1:
            raise ConfigError(f"--nodes must be at least 1, got {self.nodes}")
        if self.nproc_per_node < 1:
            raise ConfigError(f"--nproc-per-node must be at least 1, got {self.nproc_per_node}")
        if self.gpus_per_node < 0:
            raise ConfigError(f"--gpus-per-node must be 0 or more, got {self.gpus_per_node}")
        if self.time is not None and not _TIME.match(self.time):
            raise ConfigError(
                f"--time {self.time!r} is not a Slurm time limit (MINUTES, HH:MM:SS or D-HH:MM)"
            )
        if self.partition is not None and not _PARTITION.match(self.partition):
            raise ConfigError(f"--partition {self.partition!r} is not a partition name")


def agent_command(spec: SlurmSpec, run_dir: Path) -> str:
    """The per-node agent's command line, for ``bash -c`` under srun: the node rank and node
    count are the task's own ``$SLURM_NODEID``/``$SLURM_NNODES``, expanded on each node."""
    fixed = [spec.python, "-m", "mlbench.cli.main", "node"]
    rest = [
        "--nproc-per-node",
        str(spec.nproc_per_node),
        "--run-dir",
        str(run_dir),
        "--backend",
        spec.backend,
    ]
    if spec.threads_per_worker:  # else the agent's default: the node's CPU cores / K
        rest += ["--threads-per-worker", str(spec.threads_per_worker)]
    return (
        f'exec {shlex.join(fixed)} --nnodes "$SLURM_NNODES" --node-rank "$SLURM_NODEID" '
        f'--master-addr "$MASTER_ADDR" --master-port "$MASTER_PORT" {shlex.join(rest)}'
    )


def batch_script(spec: SlurmSpec, run_dir: Path) -> str:
    """The batch script for one run (``--dry-run`` prints it; it is also kept as RUN/slurm.sbatch).

    One Slurm task per node runs the agent, which starts that node's ranks. Nodes are allocated
    whole (``--exclusive``): a timing benchmark sharing a node with another job measures both,
    and the agent's default threads per rank come from the node's CPU cores. GPUs are asked for
    only when wanted (a cluster without GRES refuses any ``--gpus-per-node``)."""
    run = shlex.quote(str(run_dir))
    sbatch = [
        f"--job-name=mlbench-{run_dir.name}",
        f"--nodes={spec.nodes}",
        "--ntasks-per-node=1",
        "--exclusive",
    ]
    if spec.gpus_per_node:
        sbatch.append(f"--gpus-per-node={spec.gpus_per_node}")
    if spec.partition:
        sbatch.append(f"--partition={spec.partition}")
    if spec.time:
        sbatch.append(f"--time={spec.time}")
    sbatch += [f"--output={run_dir}/slurm-%j.out", f"--chdir={run_dir}"]
    lines = [
        "#!/bin/bash",
        *(f"#SBATCH {opt}" for opt in sbatch),
        f"# mlbench run {run_dir.name}: {spec.nodes} node(s) x {spec.nproc_per_node} rank(s)",
        "set -euo pipefail",
        "",
        "# rendezvous: the first node of the allocation, a port fixed by the job id",
        'first=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        'if getent hosts "$first" >/dev/null 2>&1; then',
        '  MASTER_ADDR="$first"',
        "else  # a node name that does not resolve: the address Slurm itself uses for it",
        '  MASTER_ADDR=$(scontrol show node "$first" -o | tr " " "\\n" | sed -n "s/^NodeAddr=//p")',
        "fi",
        "MASTER_PORT=$(( 20000 + SLURM_JOB_ID % 20000 ))",
        "export MASTER_ADDR MASTER_PORT",
        "",
        "# one agent per node; one failing node ends the others (the reason is in rank-<r>.stderr)",
        f"srun --kill-on-bad-exit=1 --nodes={spec.nodes} --ntasks-per-node=1 \\",
        f"  --output={run}/agent-%n.stdout --error={run}/agent-%n.stderr \\",
        f"  bash -c {shlex.quote(agent_command(spec, run_dir))}",
        "",
    ]
    return "\n".join(lines)


def _slurm(cmd: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise SlurmError(
            f"{cmd[0]} not found: the slurm engine runs on a Slurm login node "
            "(with sbatch, squeue, scontrol and scancel on PATH)"
        ) from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{shlex.join(cmd)} did not answer within {timeout:.0f} s") from None


def _fields(line: str) -> dict[str, str]:
    """``Key=Value Key2=Value2`` (scontrol -o, jobcomp/filetxt) as a dict."""
    out: dict[str, str] = {}
    for token in line.split():
        key, sep, value = token.partition("=")
        if sep:
            out[key] = value
    return out


def submit(script: Path) -> str:
    """``sbatch --parsable SCRIPT`` → the job id (``ID`` or ``ID;cluster``)."""
    proc = _slurm(["sbatch", "--parsable", str(script)])
    if proc.returncode != 0:
        words = (proc.stderr or proc.stdout).strip().splitlines()
        raise SlurmError(f"sbatch refused the job: {words[-1] if words else proc.returncode}")
    return proc.stdout.strip().split(";")[0]


def cancel(job_id: str) -> None:
    """``scancel ID``: Slurm signals every step, then ends the job (gone within ~0.35 s)."""
    proc = _slurm(["scancel", job_id])
    if proc.returncode != 0:
        raise SlurmError(f"scancel {job_id} failed: {(proc.stderr or proc.stdout).strip()}")


def queue_state(job_id: str) -> str | None:
    """The job's state while squeue lists it, else None (ended and gone from the queue)."""
    proc = _slurm(["squeue", "-h", "-j", job_id, "-o", "%T"])
    state = proc.stdout.strip().splitlines()
    return state[0].strip() if proc.returncode == 0 and state else None


def _exit_code(text: str | None) -> int | None:
    """Slurm's ``EXIT:SIGNAL`` as one number: the exit code, or 128 + the signal."""
    if not text:
        return None
    code, _, sig = text.partition(":")
    try:
        return 128 + int(sig) if sig and int(sig) else int(code)
    except ValueError:
        return None


def jobcomp_log() -> Path | None:
    """The job completion log's path when the cluster writes one (``jobcomp/filetxt``)."""
    proc = _slurm(["scontrol", "show", "config"])
    conf = {}
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            conf[key.strip()] = value.strip()
    if conf.get("JobCompType") == "jobcomp/filetxt" and conf.get("JobCompLoc"):
        return Path(conf["JobCompLoc"])
    return None


def final_state(job_id: str) -> tuple[str, int | None] | None:
    """(JobState, exit code) of an ended job: scontrol while it remembers the job, then the job
    completion log, then sacct; None when none of them knows it (yet)."""
    proc = _slurm(["scontrol", "show", "job", job_id, "-o"])
    if proc.returncode == 0 and proc.stdout.strip():
        f = _fields(proc.stdout)
        state = f.get("JobState", "")
        if state and state not in ACTIVE_STATES:
            return state, _exit_code(f.get("ExitCode"))
        if state:
            return None
    log = jobcomp_log()
    if log is not None:
        try:
            lines = log.read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        for line in reversed(lines):
            f = _fields(line)
            if f.get("JobId") == job_id and f.get("JobState"):
                return f["JobState"], _exit_code(f.get("ExitCode"))
    try:
        proc = _slurm(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State,ExitCode"])
    except SlurmError:
        return None
    rows = [r.split("|") for r in proc.stdout.strip().splitlines() if "|" in r]
    if proc.returncode == 0 and rows:
        state = rows[0][0].split()[0]  # "CANCELLED by 0"
        return state, _exit_code(rows[0][1])
    return None


def root_cause(run_dir: Path) -> str | None:
    """The failing rank's ``MLBENCH-ERROR:`` line, preferring a real error over the lost-peer
    errors of the ranks it took down; an agent's own marker line (``agent-<n>.stderr``) next;
    else the last line an agent wrote (an agent that could not even start: a wrong Python on the
    nodes, an mlbench without ``node``)."""
    found: list[str] = []
    for pattern in ("rank-*.stderr", "agent-*.stderr"):
        for path in sorted(run_dir.glob(pattern)):
            for line in _tail(path):
                if line.startswith(ERROR_MARKER):
                    found.append(line[len(ERROR_MARKER) :].strip())
        if found:
            break
    primary = [r for r in found if not any(s in r for s in _PEER_LOSS)]
    candidates = primary or found
    if candidates:
        return candidates[0]
    for path in sorted(run_dir.glob("agent-*.stderr")):
        lines = [ln.strip() for ln in _tail(path) if ln.strip()]
        if lines:
            return f"node {path.stem.removeprefix('agent-')}: {lines[-1]}"
    return None


def _tail(path: Path, max_bytes: int = 8192) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - max_bytes))
            return fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return []


@dataclass
class SlurmLauncher:
    """The :class:`~mlbench.launch.base.Launcher` for Slurm: submit, follow, cancel."""

    run_dir: Path
    spec: SlurmSpec
    job_id: str | None = field(default=None, init=False)
    _started: float = field(default=0.0, init=False)
    _next_query: float = field(default=0.0, init=False)
    _ended_at: float | None = field(default=None, init=False)

    def start(self) -> None:
        self.run_dir = self.run_dir.resolve()  # the nodes see absolute paths only
        script = self.run_dir / SCRIPT_FILE
        script.write_text(batch_script(self.spec, self.run_dir))
        self._started = time.perf_counter()
        self.job_id = submit(script)
        (self.run_dir / JOB_FILE).write_text(
            json.dumps({"job_id": self.job_id, "script": SCRIPT_FILE, "submitted": time.time()})
            + "\n"
        )

    def poll(self) -> Outcome | None:
        assert self.job_id is not None, "poll before start"
        now = time.monotonic()
        if now < self._next_query:
            return None
        self._next_query = now + QUERY_SECONDS
        state = queue_state(self.job_id)
        if state in ACTIVE_STATES:
            return None
        final = final_state(self.job_id)
        if final is None:
            # gone from the queue but not yet in any record: give the controller a moment
            self._ended_at = self._ended_at or now
            if now - self._ended_at < 30:
                return None
            return self._outcome("failed", f"Slurm job {self.job_id} vanished without a record")
        return self._ended(*final)

    def _ended(self, state: str, code: int | None) -> Outcome:
        if state == "COMPLETED" and code in (0, None):
            return self._outcome("finished", None, code)
        if state == "CANCELLED":
            return self._outcome("cancelled", f"Slurm job {self.job_id} was cancelled", code)
        cause = root_cause(self.run_dir)
        what = f"Slurm job {self.job_id} ended {state}" + (
            f" (exit code {code})" if code is not None else ""
        )
        return self._outcome("failed", cause or what, code)

    def stop(self, reason: str = "interrupted by user (Ctrl-C)") -> Outcome:
        """``scancel`` the job and wait (bounded) until Slurm has ended it."""
        if self.job_id is not None:
            with contextlib.suppress(SlurmError):  # already ended: nothing left to cancel
                cancel(self.job_id)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and queue_state(self.job_id) in ACTIVE_STATES:
                time.sleep(0.2)
        final = final_state(self.job_id) if self.job_id else None
        return self._outcome("cancelled", reason, final[1] if final else None)

    def logs(self, rank: int) -> tuple[Path, Path]:
        return self.run_dir / f"rank-{rank}.stdout", self.run_dir / f"rank-{rank}.stderr"

    def _outcome(self, state: str, reason: str | None, code: int | None = None) -> Outcome:
        # Slurm reports one exit code for the job (the step's worst), not one per rank
        return Outcome(state, reason, [code], time.perf_counter() - self._started)


def read_job_id(run_dir: Path) -> str | None:
    """The Slurm job id the launcher recorded in ``run_dir`` (None before it submitted)."""
    try:
        job = json.loads((run_dir / JOB_FILE).read_text())
    except (OSError, ValueError):
        return None
    job_id = job.get("job_id") if isinstance(job, dict) else None
    return str(job_id) if job_id else None
