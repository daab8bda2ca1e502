"""Per-scheme cost on task 1a with 2 workers: step time, exposed communication and bytes per step.

Runs the real CLI (`mlbench run cifar10-resnet20 --workers 2 --algorithm NAME ...`) once per
scheme, side by side in one session, and reads each run's result.json. Prints a Markdown table
and, with --record, appends it with the command to benchmarks/RESULTS.md.

    python benchmarks/algorithms_table.py --data-dir .data            # full: 40 steps per scheme
    python benchmarks/algorithms_table.py --data-dir .data --quick    # 6 steps per scheme
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCHEMES: list[tuple[str, list[str]]] = [
    ("allreduce", []),
    ("allreduce", ["algorithm.overlap=true"]),
    ("allreduce", ["algorithm.per_layer=true"]),
    ("adam", []),
    ("ddp", []),
    ("ddp", ["algorithm.ddp_hook=powersgd", "algorithm.matrix_rank=2"]),
    ("powersgd", ["algorithm.matrix_rank=2"]),
    ("gossip", ["algorithm.topology=ring"]),
    ("topk", ["algorithm.fraction=0.01"]),
    ("randomk", ["algorithm.fraction=0.01"]),
    ("signsgd", ["algorithm.sign_variant=ef"]),
    ("signsgd", ["algorithm.sign_variant=majority"]),
    ("localsgd", ["algorithm.local_steps=4"]),
]


def run_one(name: str, extra: list[str], args: argparse.Namespace, runs: Path) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "mlbench.cli.main",
        "run",
        "cifar10-resnet20",
        "--workers",
        "2",
        "--data-dir",
        args.data_dir,
        "--algorithm",
        name,
        "--runs-dir",
        str(runs),
        "--json",
        "--set",
        f"train.max_steps={args.steps}",
        "--set",
        "data.val_samples=256",
        "--set",
        "train.log_every_steps=5",
    ]
    for item in extra:
        cmd += ["--set", item]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    return json.loads(proc.stdout)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--quick", action="store_true", help="6 steps per scheme (smoke test)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--record", action="store_true", help="append the table to RESULTS.md")
    args = p.parse_args()
    args.steps = args.steps or (6 if args.quick else 40)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in SCHEMES:
            label = name + (" " + " ".join(e.split(".", 1)[1] for e in extra) if extra else "")
            start = time.monotonic()
            result = run_one(name, extra, args, Path(tmp))
            if "error" in result:
                rows.append(f"| {label} | failed: {result['error']} | | | | |")
                continue
            s = result["summary"]
            ratio = s.get("compression_ratio")
            rows.append(
                f"| {label} | {1000 * s['step_time']:.0f} "
                f"| {1000 * s['exposed_communication_per_step']:.1f} "
                f"| {s['bytes_per_step'] / 2 / 1e3:.1f} "
                f"| {f'{ratio:.1f}×' if ratio else '—'} | {s['throughput']:.0f} |"
            )
            print(f"{label}: done in {time.monotonic() - start:.0f} s", file=sys.stderr)
    header = (
        "| scheme | step (ms) | exposed comm / step (ms) | KB sent / step / rank | "
        "vs dense | img/s |\n|---|---|---|---|---|---|"
    )
    table = header + "\n" + "\n".join(rows)
    print(table)
    if args.record:
        command = "python benchmarks/algorithms_table.py " + " ".join(sys.argv[1:])
        with open(Path(__file__).with_name("RESULTS.md"), "a") as fh:
            fh.write(
                f"\n### Schemes on 1a, 2 workers × 1 thread, {args.steps} steps "
                f"({time.strftime('%Y-%m-%d')})\n\n```sh\n{command}\n```\n\n{table}\n"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
