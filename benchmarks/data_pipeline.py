"""P6: is the 1a input pipeline fast enough never to be the bottleneck?

Measures, in one process on one thread (as one worker of a 2 × 1 run gets), batches/s of task
1a's real input pipeline (CIFAR-10 train shard, shuffled index gather, random crop + flip,
normalisation: exactly what `build_data` gives the loop) against the training step rate of the
same ResNet-20 on batches of the same size (forward, loss, backward, SGD step). The two are
interleaved (pipeline burst, training burst, ...) so machine noise hits both. Target: the
pipeline is ≥ 10× faster than training consumes.

    python benchmarks/data_pipeline.py --data-dir .data            # full
    python benchmarks/data_pipeline.py --data-dir .data --quick    # < 1 minute (smoke)
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from common import finish, interleave, median, table, verdict  # type: ignore[import-not-found]

TARGET = 10.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=".data", help="root holding cifar10/ (default .data)")
    p.add_argument("--quick", action="store_true", help="short bursts (smoke test, < 1 min)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--no-record", action="store_true", help="don't append to RESULTS.md")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from mlbench.dist import DistContext
    from mlbench.runs import resolve_config

    task, cfg = resolve_config("cifar10-resnet20", overrides=[f"data.dir={args.data_dir}"])
    task.prepare_data(cfg)
    ctx = DistContext(0, 2, 0, "gloo", torch.device("cpu"))  # rank 0's shard of a 2-worker run
    data = task.build_data(cfg, ctx)
    train_data = data.train
    model = task.build_model(cfg, data.facts)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    batches = 20 if args.quick else 100
    steps = 3 if args.quick else 15
    repeats = 2 if args.quick else 5
    fixed = next(iter(train_data))

    def pipeline() -> float:
        it = iter(train_data)
        start = time.perf_counter()
        for _ in range(batches):
            next(it)
        return batches / (time.perf_counter() - start)

    def training() -> float:
        x, y = fixed
        start = time.perf_counter()
        for _ in range(steps):
            loss = task.loss(model(x), (x, y), model)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return steps / (time.perf_counter() - start)

    training()  # warm-up: first convolutions pick their algorithms
    pipe, train = interleave(pipeline, training, repeats)
    ratio = median(pipe) / median(train)
    rows = [
        ["input pipeline (batches/s)", f"{median(pipe):.1f}", f"{min(pipe):.1f}–{max(pipe):.1f}"],
        ["training (steps/s)", f"{median(train):.2f}", f"{min(train):.2f}–{max(train):.2f}"],
    ]
    body = table(["what (batch 128, 1 thread)", "median", "range"], rows)
    body += f"\n\nPipeline ÷ training: **{ratio:.1f}×**, {verdict(ratio, TARGET, True)}.\n"
    return finish("P6: 1a input pipeline vs training step rate", body, args.no_record)


if __name__ == "__main__":
    sys.exit(main())
