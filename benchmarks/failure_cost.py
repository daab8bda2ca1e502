"""The cost of a failure per scheme and checkpoint interval, as ``mlbench report`` shows it.

One ``mlbench sweep`` of task 2a (a9a, light goal, 2 local workers): schemes × checkpoint
interval (``train.checkpoint_every_steps``: 20, 100, none) × ``--fault none kill:rank=1,step=S``
with ``--max-restarts 1``, each point ``--repeats`` times; then ``mlbench report`` over it, which
pairs every killed configuration with the same one without the kill. Prints the report's
failure table as Markdown (train and wall time to target without / with the kill, the cost, and
the runs' own ``restart_cost_s``) and can copy the figure (``failure_cost.png``) out.

The kill lands at step S of the first attempt, before the goal (2a reaches 80 % at the end of
epoch 1, step 162, with 2 workers): the restarted ranks continue from the last checkpoint (step
140 with every 20, step 100 with every 100) or start over (none). docs/faults.md, "The cost of a
failure".

    python benchmarks/failure_cost.py --data-dir .data                      # ~6 min here
    python benchmarks/failure_cost.py --data-dir .data --repeats 1 --algorithm allreduce  # smoke
    python benchmarks/failure_cost.py --from ~/.mlbench/sweeps/<id>        # table of a sweep
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import REPO, finish, table  # type: ignore[import-not-found]

from mlbench.report.build import build_report


def _sweep(args: argparse.Namespace, work: Path) -> Path:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    intervals = ",".join(str(i) for i in args.intervals)
    cmd = [sys.executable, "-m", "mlbench.cli.main", "sweep", "epsilon-logreg", "--workers", "2"]
    cmd += ["--algorithm", *args.algorithm, "--set", "data.dataset=a9a", "--goal", "light"]
    cmd += ["--data-dir", args.data_dir, "--threads-per-worker", "1"]
    cmd += ["--set", f"train.checkpoint_every_steps={intervals}"]
    cmd += ["--fault", "none", f"kill:rank=1,step={args.kill_step}", "--max-restarts", "1"]
    cmd += ["--repeats", str(args.repeats), "--runs-dir", str(work / "runs")]
    cmd += ["--sweeps-dir", str(work / "sweeps"), "--sweep-id", "failure-cost"]
    print("$ " + " ".join(cmd[2:]), file=sys.stderr)
    proc = subprocess.run(cmd, env=env, check=False, stdout=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise SystemExit(f"the sweep failed (exit {proc.returncode}); see its output above")
    return work / "sweeps" / "failure-cost"


def _cell(side: dict[str, Any] | None) -> str:
    if not side or side["median"] is None:
        return "—"
    missed = f", {side['n_missed']} missed" if side["n_missed"] else ""
    return f"{side['median']:.2f} ({side['min']:.2f}–{side['max']:.2f}{missed})"


def _cost(m: dict[str, Any]) -> str:
    if m["cost"] is None:
        return "—"
    iv = m["cost_interval"]
    return f"{m['cost']:+.2f}" + (f" [{iv['low']:+.2f}, {iv['high']:+.2f}]" if iv else "")


def _median(spread: dict[str, Any], form: str) -> str:
    return format(spread["median"], form) if spread["median"] is not None else "—"


def rows_of(failures: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for r in failures:
        rc = r["restart_cost_s"]
        rows.append(
            [
                r["algorithm"],
                r["checkpoint"] + ("" if r["baseline_exact"] else " (vs no ckpt)"),
                _cell(r["time_to_target"]["without"]),
                _cell(r["time_to_target"]["with"]),
                _cost(r["time_to_target"]),
                _cell(r["wall_time_to_target"]["without"]),
                _cell(r["wall_time_to_target"]["with"]),
                _cost(r["wall_time_to_target"]),
                f"{rc['median']:.2f} ({rc['min']:.2f}–{rc['max']:.2f})" if rc["n"] else "—",
                _median(r["lost_train_time_s"], ".2f"),
                _median(r["downtime_s"], ".2f"),
                _median(r["resumed_from_step"], ".0f"),
            ]
        )
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=".data", help="root holding the datasets (default .data)")
    p.add_argument("--algorithm", nargs="+", default=["allreduce", "localsgd", "topk", "gossip"])
    p.add_argument("--intervals", nargs="+", default=["20", "100", "null"])
    p.add_argument("--kill-step", type=int, default=150)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--from", dest="source", help="a sweep directory to tabulate (runs nothing)")
    p.add_argument("--work", help="keep the sweep and its runs here (default: a temporary dir)")
    p.add_argument("--out", help="keep the report here (default: a temporary directory)")
    p.add_argument("--figure", help="copy failure_cost.png here (e.g. docs/img/...)")
    p.add_argument("--no-record", action="store_true", help="don't append to RESULTS.md")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: allreduce, checkpoint every 20, kill at step 30, one repeat (~20 s)",
    )
    args = p.parse_args()
    if args.quick:
        args.algorithm, args.intervals, args.kill_step, args.repeats = ["allreduce"], ["20"], 30, 1
    args.data_dir = str(Path(args.data_dir).expanduser().resolve())
    with tempfile.TemporaryDirectory() as tmp:
        started = time.monotonic()
        work = Path(args.work).resolve() if args.work else Path(tmp)
        sweep = Path(args.source) if args.source else _sweep(args, work)
        elapsed = time.monotonic() - started
        out = Path(args.out) if args.out else Path(tmp) / "report"
        build_report([sweep], out)
        data = json.loads((out / "report.json").read_text())
        if args.figure:
            shutil.copyfile(out / "failure_cost.png", args.figure)
    failures = data["failures"]
    if not failures:
        raise SystemExit("no configuration with a fault in the input")
    head = [
        "scheme",
        "checkpoint",
        "time to target without (s)",
        "with the kill (s)",
        "cost (s) [95 % interval]",
        "wall to target without (s)",
        "with the kill (s)",
        "cost (s) [95 % interval]",
        "restart_cost_s",
        "lost train s",
        "downtime s",
        "resumed from step",
    ]
    n = max(r["time_to_target"]["with"]["n"] for r in failures)
    body = table(head, rows_of(failures))
    body += (
        f"\n\n{failures[0]['faults']}, --max-restarts 1; medians (min–max) over {n} repeat(s) "
        "of each configuration, over the runs that reached the target."
    )
    if not args.source:
        body += f" The sweep took {elapsed:.0f} s wall."
    return finish("The cost of a failure per scheme and checkpoint interval", body, args.no_record)


if __name__ == "__main__":
    sys.exit(main())
