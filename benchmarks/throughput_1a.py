"""P4: task 1a throughput against the original MLBench and against a bare PyTorch loop.

Official hyperparameters (batch 128 per worker), real CIFAR-10, 2 gloo workers × 1 thread. Ours
is the real CLI (`mlbench run cifar10-resnet20 --workers 2`), img/s = samples ÷ train time (the
slowest rank's summed step time; evaluation excluded). The reference is the loop a PyTorch user
would write for the same job — 2 processes, DistributedDataParallel, the same model, shard,
augmentation and SGD — timed over the same number of steps, in the same script, alternating
with ours. The original MLBench measured 171 img/s with 2 workers on this machine kind
(../shared/reference/MLBENCH.md). Target: ≥ 1.25 × 171 = 214 img/s.

    python benchmarks/throughput_1a.py --data-dir .data            # full
    python benchmarks/throughput_1a.py --data-dir .data --quick    # < 1 minute (smoke)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import finish, interleave, median, run_mlbench, table, verdict  # type: ignore[import-not-found]

ORIGINAL_2W = 171.0
TARGET = 1.25 * ORIGINAL_2W


def _bare_rank(ctx: Any, data_dir: str, steps: int) -> float:
    """One rank of the hand-written DDP loop; returns its seconds for ``steps`` steps."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from mlbench.runs import resolve_config

    task, cfg = resolve_config("cifar10-resnet20", overrides=[f"data.dir={data_dir}"])
    torch.manual_seed(cfg.seed)
    data = task.build_data(cfg, ctx)
    train_data = data.train
    model = DistributedDataParallel(task.build_model(cfg, data.facts))
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9, weight_decay=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    dist.barrier()
    start = time.perf_counter()
    done = 0
    while done < steps:
        for x, y in train_data:
            loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if done == steps:
                break
    return time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=".data", help="root holding cifar10/ (default .data)")
    p.add_argument("--quick", action="store_true", help="short runs, 1 each (smoke test)")
    p.add_argument("--no-record", action="store_true", help="don't append to RESULTS.md")
    args = p.parse_args()
    steps, repeats = (2, 1) if args.quick else (60, 3)
    data_dir = str(Path(args.data_dir).resolve())
    batch, workers = 128, 2
    phases: list[dict[str, float]] = []

    from mlbench.testing import run_ranks

    with tempfile.TemporaryDirectory() as tmp:

        def ours() -> float:
            result = run_mlbench(
                "cifar10-resnet20",
                [
                    "--workers",
                    str(workers),
                    "--data-dir",
                    data_dir,
                    "--set",
                    f"train.max_steps={steps}",
                    "--set",
                    "data.val_samples=256",
                ],
                Path(tmp),
            )
            summary = result["summary"]
            phases.append({k: v / summary["steps"] for k, v in summary["phases_slowest"].items()})
            return float(summary["throughput"])

        def bare() -> float:
            seconds = max(run_ranks(_bare_rank, workers, data_dir, steps, timeout=900))
            return workers * batch * steps / seconds

        mine, ref = interleave(ours, bare, repeats)
    rows = [
        [
            "mlbench (allreduce, full phase timing)",
            f"{median(mine):.1f}",
            f"{median(mine) / ORIGINAL_2W:.2f}×",
        ],
        ["bare PyTorch loop (DDP)", f"{median(ref):.1f}", f"{median(ref) / ORIGINAL_2W:.2f}×"],
        ["original MLBench (reference file)", f"{ORIGINAL_2W:.0f}", "1.00×"],
    ]
    body = table([f"1a, 2 workers × 1 thread, {steps} steps", "img/s", "vs original"], rows)
    split = {k: median([p[k] for p in phases]) for k in phases[0]}
    body += (
        f"\n\nOurs ÷ bare: **{median(mine) / median(ref):.3f}**. Ours: {median(mine):.0f} img/s, "
        f"{verdict(median(mine), TARGET, True).replace('target', 'target img/s')}. "
        "Per-step phases (ms, slowest rank): "
        + ", ".join(f"{k} {1e3 * v:.1f}" for k, v in split.items() if v > 0)
        + ".\n"
    )
    return finish(
        "P4: 1a throughput vs the original MLBench and a bare PyTorch loop", body, args.no_record
    )


if __name__ == "__main__":
    sys.exit(main())
