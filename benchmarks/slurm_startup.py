"""Time from ``mlbench run`` to the first training step: the slurm engine vs the local one.

Same task (2a, epsilon-logreg on a9a, light goal), 2 workers × 1 thread: locally 2 processes,
under Slurm 2 emulated nodes × 1 rank on this machine (a real Slurm started as the tests start it,
tests/support/slurm.py; needs root, slurm-wlm and munge). The clock starts just before the
``mlbench run`` process is spawned; "first step" is the earliest ``train`` event of any rank (its
wall-clock ``time``), "end" when the command exits. Runs alternate engines to share the noise.

    python benchmarks/slurm_startup.py --data-dir .data --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.slurm import SlurmCluster  # noqa: E402

from mlbench.telemetry.events import read_events  # noqa: E402


def one_run(engine: str, data_dir: Path, home: Path, env: dict[str, str]) -> tuple[float, float]:
    runs = home / "runs"
    cmd = [sys.executable, "-m", "mlbench.cli.main", "run", "epsilon-logreg"]
    cmd += ["--set", "data.dataset=a9a", "--goal", "light", "--data-dir", str(data_dir)]
    cmd += ["--threads-per-worker", "1", "--runs-dir", str(runs)]
    cmd += ["--engine", "slurm", "--nodes", "2"] if engine == "slurm" else ["--workers", "2"]
    start = time.time()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    end = time.time()
    run_dir = max(runs.iterdir(), key=lambda d: d.stat().st_mtime)
    first = min(
        r["time"]
        for rank in (0, 1)
        for r in read_events(run_dir / f"rank-{rank}.jsonl")
        if r["kind"] == "train"
    )
    return first - start, end - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="one run per engine, no warm-up (smoke)")
    p.add_argument(
        "--no-record", action="store_true", help="accepted for symmetry: this never records"
    )
    args = p.parse_args()
    if args.quick:
        args.repeats = 1
    root = Path(tempfile.mkdtemp(prefix="mlbench-slurm-"))
    cluster = SlurmCluster(root)
    cluster.start()
    try:
        home = Path(tempfile.mkdtemp(prefix="mlbench-bench-"))
        env = dict(cluster.env, MLBENCH_HOME=str(home))
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
        times: dict[str, list[tuple[float, float]]] = {"local": [], "slurm": []}
        if not args.quick:
            one_run("local", args.data_dir.resolve(), home, env)  # warm the cache, untimed
        for _ in range(args.repeats):
            for engine in ("local", "slurm"):
                times[engine].append(one_run(engine, args.data_dir.resolve(), home, env))
        print("target: none — measured, not judged (Slurm's submit and start vs local spawn)")
        print("| engine | to first step (s), each run | median | command → exit (s), median |")
        print("|---|---|---|---|")
        for engine, runs in times.items():
            firsts = [f for f, _ in runs]
            ends = [e for _, e in runs]
            each = ", ".join(f"{f:.2f}" for f in firsts)
            print(
                f"| {engine} | {each} | {statistics.median(firsts):.2f} | "
                f"{statistics.median(ends):.2f} |"
            )
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
