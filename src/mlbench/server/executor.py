"""Executors start and stop runs for the scheduler. One interface, so the Kubernetes executor
(Indexed Job + headless Service) can replace the local one without touching the scheduler.

The local executor starts one ``mlbench run`` launcher process per run — the same code path as a
user's command — in its own session, with ``--upload`` pointing back at this master so events
stream into the database while the JSONL files stay the source of truth.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import psutil


@dataclass
class Handle:
    pid: int
    started: float  # process create time (informational)
    run_dir: Path  # its name is the run id, which the launcher's command line carries


class Executor(Protocol):
    def launch(self, run_id: str, argv: list[str], upload_token: str) -> Handle: ...

    def alive(self, handle: Handle) -> bool: ...

    def stop(self, handle: Handle) -> None: ...


class LocalExecutor:
    """Runs each admitted run as an ``mlbench run`` launcher on this machine.

    Every worker gets ``cores // capacity`` torch threads, whatever the run's size: runs admitted
    side by side then never oversubscribe the cores (4 threads on 2 cores made a 1-worker run
    ~100x slower per step while another ran), and a k-worker run and a 1-worker baseline use the
    same threads per worker, so speedups compare workers, not thread pools.
    """

    def __init__(self, runs_dir: Path, master_url: str, capacity_workers: int = 1) -> None:
        self.runs_dir = runs_dir
        self.master_url = master_url
        self.threads_per_worker = max(1, (os.cpu_count() or 1) // max(1, capacity_workers))

    def launch(self, run_id: str, argv: list[str], upload_token: str) -> Handle:
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.runs_dir / f"{run_id}.launcher.log", "ab")  # noqa: SIM115
        env = dict(os.environ, MLBENCH_UPLOAD_TOKEN=upload_token)  # scoped to this run only
        cmd = [
            sys.executable,
            "-m",
            "mlbench.cli.main",
            "run",
            *argv,
            "--run-id",
            run_id,
            "--runs-dir",
            str(self.runs_dir),
            "--upload",
            self.master_url,
            "--threads-per-worker",
            str(self.threads_per_worker),
            "--json",
        ]
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # survives a master restart; stopped by signal to its group
        )
        log.close()
        return Handle(proc.pid, psutil.Process(proc.pid).create_time(), self.runs_dir / run_id)

    def alive(self, handle: Handle) -> bool:
        """Is our launcher still running? Identity is its command line (``--run-id ID``), not
        pid + create time: psutil derives create time from the kernel's boot time, which drifts
        on some VMs, and a recycled pid will not carry this run's id."""
        try:
            proc = psutil.Process(handle.pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return False
            cmdline = proc.cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False
        run_id = handle.run_dir.name
        return any(a == "--run-id" and b == run_id for a, b in itertools.pairwise(cmdline))

    def stop(self, handle: Handle) -> None:
        """SIGTERM the launcher: it stops every rank and records the run as cancelled."""
        if self.alive(handle):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(handle.pid, signal.SIGTERM)

    def reap(self) -> None:
        """Collect exited children so they don't linger as zombies."""
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
