"""P3: how close does the flattened gradient all-reduce come to a raw all-reduce?

On one real gloo process group of 2 local processes (1 thread each), with ResNet-20's real
gradients (272,474 floats, 1.09 MB): time `AllReduce.reduce_gradients` — what the `allreduce`
scheme does every step (gather the gradients into a flat bucket, all_reduce(SUM), scale by 1/k,
copy back) — against one raw `dist.all_reduce` of a tensor of the same number of elements on the
same group. They alternate call by call (order rotating, a barrier before each) and the
medians of thousands of calls are compared: in bursts of 100, one burst of either kind could
meet a noisy moment alone, and the ratio swung 0.81–1.02 between identical runs. Effective
bandwidth is payload bytes / time. Target: ours ÷ raw ≥ 0.95 (our bandwidth at least 95 % of
the raw collective's).

    python benchmarks/comm_efficiency.py            # full
    python benchmarks/comm_efficiency.py --quick    # < 1 minute (smoke)
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from common import finish, median, table, verdict  # type: ignore[import-not-found]

TARGET = 0.95


def _measure(ctx: Any, calls: int, bucket_mb: float) -> dict[str, Any]:
    import torch
    import torch.distributed as dist

    from mlbench.registry import get_algorithm
    from mlbench.runs import resolve_config

    task, cfg = resolve_config("cifar10-resnet20", overrides=[f"algorithm.bucket_mb={bucket_mb}"])
    model = task.build_model(cfg, {"classes": 10})
    algo = get_algorithm("allreduce")(cfg.algorithm, ctx)
    model = algo.wrap(model)
    algo.setup(model)
    x = torch.randn(32, 3, 32, 32)
    model(x).sum().backward()
    numel = sum(p.grad.numel() for p in model.parameters() if p.grad is not None)
    raw = torch.randn(numel)
    buckets = [flat for _, flat, _ in algo._views]  # the gradients' own flat buffers

    fns = {
        "ours": lambda: algo.reduce_gradients(model),
        "raw": lambda: dist.all_reduce(raw),
        # ours without the 1/k scaling pass: what the rest of the gap is made of
        "bucket": lambda: [dist.all_reduce(b) for b in buckets],
    }
    names = list(fns)
    times: dict[str, list[float]] = {k: [] for k in names}
    warmup = 10
    for i in range(calls + warmup):
        # one call of each per round, the order rotating, each after a barrier: whichever runs
        # first would otherwise also absorb the ranks' skew, and a burst of one kind would
        # meet the machine's noise alone
        for k in names[i % len(names) :] + names[: i % len(names)]:
            dist.barrier()
            start = time.perf_counter()
            fns[k]()
            if i >= warmup:
                times[k].append(time.perf_counter() - start)
    return {"numel": numel, "median": {k: median(v) for k, v in times.items()}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer iterations (smoke test)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--bucket-mb", type=float, default=None, help="default: the task's")
    p.add_argument("--launches", type=int, default=5, help="fresh process groups (full mode)")
    p.add_argument("--no-record", action="store_true", help="don't append to RESULTS.md")
    args = p.parse_args()

    from mlbench.runs import resolve_config
    from mlbench.testing import run_ranks

    bucket = args.bucket_mb or resolve_config("cifar10-resnet20")[1].algorithm.bucket_mb
    calls, launches = (100, 1) if args.quick else (1000, args.launches)
    runs = []
    for i in range(launches):
        results = run_ranks(_measure, args.workers, calls, bucket, timeout=600)
        # a collective ends when its slowest rank does: the slowest rank's median call
        runs.append({k: max(r["median"][k] for r in results) for k in results[0]["median"]})
        print(f"launch {i + 1}/{launches}: {runs[-1]}", file=sys.stderr)
    nbytes = 4 * results[0]["numel"]
    ratios = sorted(r["raw"] / r["ours"] for r in runs)  # = our bandwidth ÷ raw bandwidth
    control = sorted(r["raw"] / r["bucket"] for r in runs)
    ratio = median(ratios)
    t = {k: median([r[k] for r in runs]) for k in runs[0]}
    labels = {
        "ours": f"`allreduce` reduce_gradients (bucket {bucket:g} MB)",
        "bucket": "… its all_reduce alone (the same bucket, no 1/k scaling)",
        "raw": "raw `dist.all_reduce`, same numel",
    }
    rows = [
        [label, f"{1e3 * t[k]:.3f}", f"{nbytes / t[k] / 1e9:.3f}"] for k, label in labels.items()
    ]
    body = table([f"what (gloo, {args.workers} ranks, {nbytes / 1e6:.2f} MB)", "ms", "GB/s"], rows)
    body += (
        f"\n\nBandwidth ours ÷ raw: **{ratio:.3f}** (per launch {ratios[0]:.3f}–{ratios[-1]:.3f}), "
        f"{verdict(ratio, TARGET, True)}. Control, the same all_reduce on the bucket ÷ raw "
        f"(identical work on another buffer): {median(control):.3f} "
        f"({control[0]:.3f}–{control[-1]:.3f}). Per launch of {args.workers} fresh processes, "
        f"the slowest rank's median of {calls} calls of each, interleaved one by one after a "
        f"barrier; medians over {launches} launch(es).\n"
    )
    return finish("P3: flattened gradient all-reduce vs raw all_reduce", body, args.no_record)


if __name__ == "__main__":
    sys.exit(main())
