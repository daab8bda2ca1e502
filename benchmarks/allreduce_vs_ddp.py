"""P2: is our all-reduce SGD scheme at least as fast per step as PyTorch's DDP?

Task 1a (ResNet-20, real CIFAR-10, official hyperparameters), 2 gloo workers × 1 thread, through
the real CLI (`mlbench run cifar10-resnet20 --workers 2 --algorithm allreduce|ddp`), alternating
the two schemes run by run so machine noise hits both. Step time is the slowest rank's train time
÷ steps from each run's result.json (evaluation excluded). Target: allreduce ÷ ddp ≤ 1.00.

    python benchmarks/allreduce_vs_ddp.py --data-dir .data            # full: 5 runs each
    python benchmarks/allreduce_vs_ddp.py --data-dir .data --quick    # 1 run each (smoke)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from common import finish, interleave, median, run_mlbench, table, verdict  # type: ignore[import-not-found]

TARGET = 1.00


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=".data", help="root holding cifar10/ (default .data)")
    p.add_argument("--quick", action="store_true", help="1 short run per scheme (smoke test)")
    p.add_argument("--steps", type=int, default=None, help="steps per run (default 40, quick 2)")
    p.add_argument("--repeats", type=int, default=None, help="runs per scheme (default 5)")
    p.add_argument("--no-record", action="store_true", help="don't append to RESULTS.md")
    args = p.parse_args()
    steps = args.steps or (2 if args.quick else 40)
    repeats = args.repeats or (1 if args.quick else 5)
    stats: dict[str, list[dict]] = {"allreduce": [], "ddp": []}

    with tempfile.TemporaryDirectory() as tmp:

        def one(scheme: str) -> float:
            result = run_mlbench(
                "cifar10-resnet20",
                [
                    "--workers",
                    "2",
                    "--algorithm",
                    scheme,
                    "--data-dir",
                    args.data_dir,
                    "--set",
                    f"train.max_steps={steps}",
                    "--set",
                    "data.val_samples=256",
                    "--set",
                    "train.log_every_steps=5",
                ],
                Path(tmp),
            )
            summary = result["summary"]
            stats[scheme].append(summary)
            print(f"{scheme}: {1e3 * summary['step_time']:.1f} ms/step", file=sys.stderr)
            return float(summary["step_time"])

        ours, ddp = interleave(lambda: one("allreduce"), lambda: one("ddp"), repeats)
    ratio = median(ours) / median(ddp)

    def row(name: str, times: list[float]) -> list[str]:
        s = stats[name]
        exposed = median([x["exposed_communication_per_step"] for x in s])
        return [
            name,
            f"{1e3 * median(times):.1f}",
            f"{1e3 * min(times):.1f}–{1e3 * max(times):.1f}",
            f"{1e3 * exposed:.1f}",
            f"{median([x['throughput'] for x in s]):.0f}",
        ]

    body = table(
        [
            f"scheme (1a, 2 × 1 thread, {steps} steps × {repeats} runs)",
            "step ms (median)",
            "range",
            "exposed comm ms",
            "img/s",
        ],
        [row("allreduce", ours), row("ddp", ddp)],
    )
    body += f"\n\nallreduce ÷ ddp step time: **{ratio:.3f}**, {verdict(ratio, TARGET, False)}.\n"
    return finish("P2: all-reduce SGD vs DDP step time", body, args.no_record)


if __name__ == "__main__":
    sys.exit(main())
