"""Executors start, watch and stop runs for the scheduler. One interface, so the Kubernetes
executor (Indexed Job + headless Service) can replace the local one without touching the
scheduler.

The contract is an *executor reference*: ``launch`` returns a small JSON-able dict that the
master stores in ``runs.executor_ref`` and hands back, unread, to ``alive``/``stop``/``outcome``
— after a master restart too. Only the executor that wrote a reference interprets it (its
``kind`` says which); the scheduler never looks inside. That is what keeps "a run is a local
process with a pid" out of the scheduler and the database schema.

The local executor starts one ``mlbench run`` launcher process per run — the same code path as a
user's command — in its own session, with ``--upload`` pointing back at this master so events
stream into the database while the JSONL files stay the source of truth. The run's resolved
config goes to the launcher as a file (``--config``), so it runs exactly what was submitted.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Protocol

import psutil

LOCAL = "local"
SLURM = "slurm"
#: executors whose run directory is on this machine (Slurm's: the shared filesystem)
_FILES_HERE = (LOCAL, SLURM)


class Executor(Protocol):
    def launch(
        self,
        run_id: str,
        config: dict[str, Any],
        workers: int,
        backend: str,
        upload_token: str,
    ) -> dict[str, Any]:
        """Start the run; return the reference that finds it again (JSON-able)."""
        ...

    def alive(self, ref: dict[str, Any]) -> bool:
        """Is the run still executing (after a master restart too)?"""
        ...

    def stop(self, ref: dict[str, Any]) -> None:
        """Ask the run to stop; it records itself as cancelled."""
        ...

    def outcome(self, ref: dict[str, Any]) -> dict[str, Any] | None:
        """The run's result.json once it has ended, if it wrote one."""
        ...

    def failure(self, ref: dict[str, Any]) -> str | None:
        """Why an ended run left no result, in one line (the launcher's error), when known."""
        ...


def run_files(ref: dict[str, Any] | None) -> Path | None:
    """The directory on this machine holding the run's files (rank stdout/stderr, events,
    result.json), or None when the executor that ran it keeps them elsewhere (or none ran it).

    The API reads logs through this whether or not this master schedules runs, so it is a
    function of the reference, not of an executor instance; each kind says where its files are.
    """
    if ref and ref.get("kind") in _FILES_HERE and isinstance(ref.get("run_dir"), str):
        return Path(ref["run_dir"])
    return None


def read_result(run_dir: Path) -> dict[str, Any] | None:
    try:
        result = json.loads((run_dir / "result.json").read_text())
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) else None


#: how much of a launcher log's end is read for its error line
LOG_TAIL_BYTES = 16 * 1024
REASON_CHARS = 1000
_CLI_ERROR = "mlbench: error: "
_TRACEBACK_END = re.compile(r"[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b.*")


def last_error(log: Path) -> str | None:
    """The error a launcher ended on, from the tail of its combined stdout/stderr log."""
    try:
        with open(log, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - LOG_TAIL_BYTES))
            tail = fh.read().decode("utf-8", "replace")
    except OSError:
        return None
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    if not lines:
        return None
    # the reason is stored as text: no control characters (PostgreSQL refuses NUL), bounded
    last = "".join(c if c.isprintable() else "?" for c in lines[-1][:REASON_CHARS])
    if last.startswith(_CLI_ERROR):
        return last.removeprefix(_CLI_ERROR)
    if "Traceback (most recent call last):" in tail and _TRACEBACK_END.fullmatch(last):
        return last
    return None


class LocalExecutor:
    """Runs each admitted run as an ``mlbench run`` launcher on this machine.

    Its reference: ``{"kind": "local", "run_id", "pid", "started", "run_dir"}``.

    Every worker gets ``cores // capacity`` torch threads, whatever the run's size: runs admitted
    side by side then never oversubscribe the cores (4 threads on 2 cores made a 1-worker run
    ~100x slower per step while another ran), and a k-worker run and a 1-worker baseline use the
    same threads per worker, so speedups compare workers, not thread pools.
    """

    #: the ``kind`` of the references it writes (a subclass running another engine has its own)
    kind = LOCAL

    def __init__(self, runs_dir: Path, master_url: str, capacity_workers: int = 1) -> None:
        self.runs_dir = runs_dir
        self.master_url = master_url
        self.threads_per_worker = max(1, (os.cpu_count() or 1) // max(1, capacity_workers))

    def base_command(
        self, run_id: str, config_file: Path, task: str, workers: int, backend: str
    ) -> list[str]:
        """What every engine's launcher line has: ``mlbench run`` with the full resolved config,
        this master's run id, runs directory and upload URL, and a JSON result."""
        return [
            *(sys.executable, "-m", "mlbench.cli.main", "run", task),
            *("--config", str(config_file), "--workers", str(workers), "--backend", backend),
            *("--run-id", run_id, "--runs-dir", str(self.runs_dir)),
            *("--upload", self.master_url, "--json"),
        ]

    def command(
        self, run_id: str, config_file: Path, task: str, workers: int, backend: str
    ) -> list[str]:
        """The launcher's command line: processes on this machine."""
        return [
            *self.base_command(run_id, config_file, task, workers, backend),
            *("--threads-per-worker", str(self.threads_per_worker)),
            # --capacity-workers is the operator's decision and the scheduler holds runs to it
            # (within the cores unless the operator set it above them): not the launcher's call
            "--oversubscribe",
        ]

    def launch(
        self,
        run_id: str,
        config: dict[str, Any],
        workers: int,
        backend: str,
        upload_token: str,
    ) -> dict[str, Any]:
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        # beside the run directory, not in it: the launcher creates that directory itself and
        # refuses one that exists (a run id is never reused)
        config_file = self.runs_dir / f"{run_id}.config.json"
        config_file.write_text(json.dumps(config, indent=2) + "\n")
        cmd = self.command(run_id, config_file, str(config["task"]), workers, backend)
        env = dict(os.environ, MLBENCH_UPLOAD_TOKEN=upload_token)  # scoped to this run only
        with open(self.runs_dir / f"{run_id}.launcher.log", "ab") as log:
            proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # survives a master restart; stopped by signal to group
            )
        return {
            "kind": self.kind,
            "run_id": run_id,
            "pid": proc.pid,
            "started": psutil.Process(proc.pid).create_time(),  # informational
            "run_dir": str(self.runs_dir / run_id),
        }

    def alive(self, ref: dict[str, Any]) -> bool:
        """Is our launcher still running? Identity is its command line (``--run-id ID``), not
        pid + create time: psutil derives create time from the kernel's boot time, which drifts
        on some VMs, and a recycled pid will not carry this run's id."""
        pid, run_id = ref.get("pid"), ref.get("run_id")
        if ref.get("kind") != self.kind or not isinstance(pid, int) or not run_id:
            return False
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return False
            cmdline = proc.cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False
        return any(a == "--run-id" and b == run_id for a, b in itertools.pairwise(cmdline))

    def stop(self, ref: dict[str, Any]) -> None:
        """SIGTERM the launcher: it stops every rank and records the run as cancelled."""
        if self.alive(ref):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(ref["pid"], signal.SIGTERM)

    def outcome(self, ref: dict[str, Any]) -> dict[str, Any] | None:
        run_dir = run_files(ref)
        return read_result(run_dir) if run_dir is not None else None

    def failure(self, ref: dict[str, Any]) -> str | None:
        """The launcher's last error line from its log: ``mlbench: error: ...`` (a refused
        request, exit 2) or a traceback's final line. None when the log ends otherwise (a killed
        launcher prints no error) — the scheduler then keeps its generic reason."""
        run_dir = run_files(ref)
        if run_dir is None:
            return None
        return last_error(run_dir.with_name(f"{run_dir.name}.launcher.log"))

    def reap(self) -> None:
        """Collect exited children so they don't linger as zombies."""
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
