"""Run the real ``mlbench`` CLI in a subprocess and inspect what it left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[2]


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["MLBENCH_HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def mlbench(
    *args: str, home: Path, timeout: float = 240, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlbench.cli.main", *args],
        env=cli_env(home, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def only_run_dir(runs_dir: Path) -> Path:
    dirs = [d for d in runs_dir.iterdir() if d.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def read_result(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "result.json").read_text())


def leftover_workers(run_dir: Path) -> list[int]:
    """PIDs of live processes whose command line names this run directory."""
    pids = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if str(run_dir) in cmd and proc.info["status"] != psutil.STATUS_ZOMBIE:
            pids.append(proc.pid)
    return pids


def a9a_args(real_data: Path, runs: Path, *extra: str) -> list[str]:
    """``mlbench run`` of task 2a on a9a with 2 workers into ``runs`` — the small real run the
    fault, network and upload tests start — then ``extra`` (later ``--set``s win)."""
    return [
        "run",
        "epsilon-logreg",
        "--workers",
        "2",
        "--data-dir",
        str(real_data),
        "--set",
        "data.dataset=a9a",
        "--runs-dir",
        str(runs),
        *extra,
    ]
