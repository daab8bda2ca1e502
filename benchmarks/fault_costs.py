"""The cost of a failure: task 2a (a9a, 2 local workers) run to a fixed step count without a
fault, with a rank killed mid-run, and with a rank hung mid-run, each restarted once by the
engine (``--max-restarts 1``) — the wall time the launcher measured, and what it was spent on.

The restarted attempt starts the training over unless the run resumes from a checkpoint
(docs/checkpoints.md); on 2a the training itself is a fraction of a second, so what a failure
costs here is the detection (immediate for a kill, ``train.hang_timeout`` for a hang), stopping
the peers, and starting every rank again (interpreter, torch, data). docs/faults.md.

    python benchmarks/fault_costs.py --data-dir .data            # 3 repeats
    python benchmarks/fault_costs.py --data-dir .data --quick    # 1 repeat (smoke)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import REPO, finish, median, table  # type: ignore[import-not-found]

HANG_TIMEOUT = 5


def _run(data_dir: str, runs: Path, steps: int, fault: list[str]) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "mlbench.cli.main", "run", "epsilon-logreg", "--workers", "2"]
    cmd += ["--data-dir", data_dir, "--set", "data.dataset=a9a", "--runs-dir", str(runs)]
    cmd += ["--set", f"train.max_steps={steps}", "--set", f"train.hang_timeout={HANG_TIMEOUT}"]
    proc = subprocess.run(
        [*cmd, *fault, "--json"], env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(fault) or 'no fault'}: exit {proc.returncode}\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout)
    run_dir = runs / result["run_id"]
    attempts = run_dir / "attempts.jsonl"
    result["_attempts"] = (
        [json.loads(line) for line in attempts.read_text().splitlines()]
        if attempts.exists()
        else []
    )
    result["_created"] = json.loads((run_dir / "run.json").read_text())["created"]
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=".data", help="root holding the datasets (default .data)")
    p.add_argument("--quick", action="store_true", help="1 repeat (smoke test)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=600, help="steps per run (default 600)")
    p.add_argument("--no-record", action="store_true", help="don't append to RESULTS.md")
    args = p.parse_args()
    data_dir = str(Path(args.data_dir).expanduser().resolve())
    at = args.steps // 2
    scenarios = {
        "no fault": [],
        f"kill:rank=1,step={at}": ["--fault", f"kill:rank=1,step={at}", "--max-restarts", "1"],
        f"hang:rank=1,step={at}": ["--fault", f"hang:rank=1,step={at}", "--max-restarts", "1"],
    }
    repeats = 1 if args.quick else args.repeats
    walls: dict[str, list[float]] = {name: [] for name in scenarios}
    first: dict[str, list[float]] = {name: [] for name in scenarios}
    gaps: dict[str, list[float]] = {name: [] for name in scenarios}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            for name, fault in scenarios.items():
                r = _run(data_dir, Path(tmp), args.steps, fault)
                assert r["state"] == "finished" and r["summary"]["steps"] == args.steps, r
                walls[name].append(r["launcher"]["wall_time_total"])
                if r["_attempts"]:
                    (a,) = r["_attempts"]
                    first[name].append(a["failed_at"] - r["_created"])
                    gaps[name].append(a["restarted_at"] - a["failed_at"])
    base = median(walls["no fault"])
    rows = []
    for name in scenarios:
        wall = median(walls[name])
        rows.append(
            [
                name,
                f"{wall:.2f}",
                f"{wall - base:+.2f}",
                f"{median(first[name]):.2f}" if first[name] else "—",
                f"{median(gaps[name]):.2f}" if gaps[name] else "—",
            ]
        )
    body = table(
        [
            f"2a a9a, 2 workers, {args.steps} steps, fault at step {at}",
            "launcher wall s",
            "cost vs no fault s",
            "failure seen at s (from run created)",
            "restart s (seen → ranks respawned)",
        ],
        rows,
    )
    body += (
        f"\n\nMedians of {repeats} run(s) each; every run finished its {args.steps} steps (the "
        f"target of this measurement) after at most one restart. The hang is seen "
        f"train.hang_timeout = {HANG_TIMEOUT} s after the rank stopped. The restart column runs "
        "from the failure seen to the new ranks spawned (the root cause read, the peers stopped: "
        "SIGTERM, SIGKILL after at most 3 s); the rest of the cost is the new ranks' start-up "
        "(interpreter, torch, data) and the steps run again (no checkpoint here).\n"
    )
    return finish(
        "The cost of a failure on task 2a (kill and hang, one restart)", body, args.no_record
    )


if __name__ == "__main__":
    sys.exit(main())
