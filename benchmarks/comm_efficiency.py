"""P3: how close does the flattened gradient all-reduce come to a raw all-reduce?

On one real gloo process group of 2 local processes (1 thread each), with ResNet-20's real
gradients (272,474 floats, 1.09 MB): time `AllReduce.reduce_gradients` — what the `allreduce`
scheme does every step (gather the gradients into a flat bucket, all_reduce(SUM), scale by 1/k,
copy back) — against one raw `dist.all_reduce` of a tensor of the same number of elements on the
same group. The two alternate in bursts so noise hits both; effective bandwidth is payload
bytes / time. Target: ours ÷ raw ≥ 0.95 (our bandwidth at least 95 % of the raw collective's).

    python benchmarks/comm_efficiency.py            # full
    python benchmarks/comm_efficiency.py --quick    # < 1 minute (smoke)
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from common import median, record, table, verdict  # type: ignore[import-not-found]

TARGET = 0.95


def _measure(ctx: Any, iters: int, repeats: int, bucket_mb: float) -> dict[str, Any]:
    import torch
    import torch.distributed as dist

    from mlbench.registry import get_algorithm
    from mlbench.runs import resolve_config

    task, cfg = resolve_config("cifar10-resnet20", overrides=[f"algorithm.bucket_mb={bucket_mb}"])
    model = task.build_model(cfg)
    algo = get_algorithm("allreduce")(cfg.algorithm, ctx)
    model = algo.wrap(model)
    algo.setup(model)
    x = torch.randn(32, 3, 32, 32)
    model(x).sum().backward()
    numel = sum(p.grad.numel() for p in model.parameters() if p.grad is not None)
    raw = torch.randn(numel)

    def ours() -> float:
        dist.barrier()
        start = time.perf_counter()
        for _ in range(iters):
            algo.reduce_gradients(model)
        return (time.perf_counter() - start) / iters

    def baseline() -> float:
        dist.barrier()
        start = time.perf_counter()
        for _ in range(iters):
            dist.all_reduce(raw)
        return (time.perf_counter() - start) / iters

    ours(), baseline()  # warm-up (connections, allocator)
    mine: list[float] = []
    theirs: list[float] = []
    for i in range(repeats):
        for fn, out in ((ours, mine), (baseline, theirs))[:: 1 if i % 2 == 0 else -1]:
            out.append(fn())
    return {"numel": numel, "ours": mine, "raw": theirs, "collectives": algo.collectives}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer iterations (smoke test)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--bucket-mb", type=float, default=None, help="default: the task's")
    p.add_argument("--no-record", action="store_true", help="don't append to RESULTS.md")
    args = p.parse_args()

    from mlbench.runs import resolve_config
    from mlbench.testing import run_ranks

    bucket = args.bucket_mb or resolve_config("cifar10-resnet20")[1].algorithm.bucket_mb
    iters, repeats = (20, 3) if args.quick else (100, 9)
    results = run_ranks(_measure, args.workers, iters, repeats, bucket, timeout=600)
    r0 = results[0]
    nbytes = 4 * r0["numel"]
    # a collective ends when its slowest rank does: take the per-round max over ranks
    ours = [max(r["ours"][i] for r in results) for i in range(repeats)]
    raw = [max(r["raw"][i] for r in results) for i in range(repeats)]
    ratio = median(raw) / median(ours)  # = our bandwidth ÷ raw bandwidth
    rows = [
        [
            f"`allreduce` reduce_gradients (bucket {bucket:g} MB)",
            f"{1e3 * median(ours):.2f}",
            f"{nbytes / median(ours) / 1e9:.3f}",
        ],
        [
            "raw `dist.all_reduce`, same numel",
            f"{1e3 * median(raw):.2f}",
            f"{nbytes / median(raw) / 1e9:.3f}",
        ],
    ]
    body = table([f"what (gloo, {args.workers} ranks, {nbytes / 1e6:.2f} MB)", "ms", "GB/s"], rows)
    body += (
        f"\n\nBandwidth ours ÷ raw: **{ratio:.3f}**, {verdict(ratio, TARGET, True)}. "
        f"Medians of {repeats} bursts of {iters} collectives each.\n"
    )
    print(body)
    if not args.no_record:
        record("P3: flattened gradient all-reduce vs raw all_reduce", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
