"""What every benchmark script shares: recording to RESULTS.md, running the real CLI, and
interleaving a measurement with its baseline so machine noise hits both alike.

These machines are shared and noisy, so absolute times drift between runs; a script measures the
thing and its baseline in the same run, alternating (A B A B ...), and reports the ratio of
medians. Every recorded section carries the exact command that produced it.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).with_name("RESULTS.md")
REPO = Path(__file__).resolve().parents[1]


def command_line() -> str:
    """The command that ran this script, as a user would type it from the repository root."""
    script = Path(sys.argv[0]).resolve()
    try:
        shown = str(script.relative_to(REPO))
    except ValueError:
        shown = str(script)
    return shlex.join(["python", shown, *sys.argv[1:]])


def machine() -> str:
    import torch

    cpus = os.cpu_count()
    gpu = ""
    if torch.cuda.is_available():
        gpu = f", {torch.cuda.get_device_name(0)}"
    return f"{platform.machine()} {cpus} CPUs{gpu}, torch {torch.__version__}"


def record(title: str, body: str) -> None:
    """Append a section to RESULTS.md: title, date, machine, the exact command, then ``body``."""
    with open(RESULTS, "a", encoding="utf-8") as fh:
        fh.write(
            f"\n### {title} ({time.strftime('%Y-%m-%d')})\n\n"
            f"Machine: {machine()}.\n\n```sh\n{command_line()}\n```\n\n{body.rstrip()}\n"
        )
    print(f"appended to {RESULTS}", file=sys.stderr)


def finish(title: str, body: str, no_record: bool) -> int:
    """Every script's end: print the section, append it to RESULTS.md unless ``--no-record``."""
    print(body)
    if not no_record:
        record(title, body)
    return 0


def interleave(
    a: Callable[[], float], b: Callable[[], float], repeats: int
) -> tuple[list[float], list[float]]:
    """Run ``a`` and ``b`` alternately ``repeats`` times each (b first on odd rounds, so neither
    always runs on a warmer machine); returns both lists of measurements."""
    xs: list[float] = []
    ys: list[float] = []
    for i in range(repeats):
        if i % 2:
            ys.append(b())
            xs.append(a())
        else:
            xs.append(a())
            ys.append(b())
    return xs, ys


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def verdict(ratio: float, target: float, higher_is_better: bool) -> str:
    ok = ratio >= target if higher_is_better else ratio <= target
    sign = "≥" if higher_is_better else "≤"
    return f"{'met' if ok else 'MISSED'} (target {sign} {target:g})"


def run_mlbench(task: str, args: list[str], runs_dir: Path, env: dict[str, str] | None = None):
    """``mlbench run TASK ... --json`` in a subprocess; returns the parsed result.json.

    Raises RuntimeError with the CLI's last error line when the run fails."""
    cmd = [
        sys.executable,
        "-m",
        "mlbench.cli.main",
        "run",
        task,
        "--runs-dir",
        str(runs_dir),
        "--json",
        *args,
    ]
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), full_env.get("PYTHONPATH", "")])
    full_env.update(env or {})
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=full_env)
    if proc.returncode != 0:
        last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"
        raise RuntimeError(f"mlbench run {task} failed: {last}")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table (what RESULTS.md holds and the terminal shows)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
