"""Tasks 4a/4b throughput: full-size GNMT v2 and Transformer big through mlbench against a bare
PyTorch loop.

The reference models at their default sizes (model.* untouched: GNMT 1024 wide, 4+4 layers;
Transformer big, 6+6 layers, d 1024), gloo workers × 1 thread, fp32 on both sides (the recipes'
fp16 autocast is a GPU path: on this CPU it is slower than fp32 and measures the emulation, not
the loop). No WMT training corpus is available offline, so the data is real Multi30k prepared
with the recipes' subword sizes (``mlbench data prepare``: BPE with 32,000 merges for wmt16, a
32,000-piece sentencepiece vocabulary for wmt17 — or the largest Multi30k supports); the model's
cost depends on the vocabulary through its embeddings and classifier, so V is printed. The
global batch is cut small (4a: 32 sentences, 4b: 2,048 padded tokens, each 2 micro-batches per
rank) so a step takes seconds here; the accumulation, no_sync and global normalisation still run.

Ours is the real CLI (`mlbench run TASK --workers 2`): tokens/s = target tokens ÷ train time
(the slowest rank's summed step time; the final evaluation is outside it and cut to 8 test
sentences with a short decoding limit). The reference is the loop a PyTorch user would write for
the same step — the same processes, task objects (data, model, schedule), DistributedDataParallel,
each step's micro-batches under no_sync but the last, label-smoothed cross-entropy summed and
divided by the global count of sentences (4a) or target tokens (4b) (one all-reduce of the count),
backward, clip to 5 after the reduction (4a), Adam — timed over the same steps, alternating with
ours. Each step all-reduces the whole fp32 gradient (4a ~0.6 GB, 4b ~0.8 GB at V = 32k).

Target: ours ÷ bare ≥ 0.95 (the loop's timing and bookkeeping cost under 5 % of a step).

    python benchmarks/throughput_translation.py --data-dir .data              # both, full size
    python benchmarks/throughput_translation.py --data-dir .data --quick      # 1 step, tiny
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (  # type: ignore[import-not-found]
    REPO,
    finish,
    interleave,
    median,
    run_mlbench,
    table,
    verdict,
)

TARGET = 0.95
TASKS = ("wmt16-gnmt", "wmt17-transformer")
DATASET = {"wmt16-gnmt": "wmt16", "wmt17-transformer": "wmt17"}
#: a small global batch (2 micro-batches per rank on 2 workers), a short final evaluation
SMALL = {
    "wmt16-gnmt": [
        "data.global_batch=32",
        "data.batch_size=8",
        "data.val_samples=8",
        "decode.max_len=8",
    ],
    "wmt17-transformer": [
        "data.global_tokens=2048",
        "data.batch_size=512",
        "data.val_samples=8",
        "decode.max_len_extra=2",
    ],
}
#: --quick: tiny models on the tests' 2k-vocabulary preparations (a smoke test of the script)
TINY = {
    "wmt16-gnmt": ["model.hidden_size=32"],
    "wmt17-transformer": [
        "model.d_model=32",
        "model.ffn_size=64",
        "model.heads=2",
        "model.encoder_layers=1",
        "model.decoder_layers=1",
    ],
}
RECIPE_VOCAB = 32000


def prepare(dataset: str, source: Path, out: Path) -> Path:
    """``mlbench data prepare DATASET`` from Multi30k with the recipe's subword size into
    ``out`` (kept: a folder with a manifest is reused). Multi30k is too small for 32,000
    sentencepiece pieces; sentencepiece then names the largest it can build, which is used."""
    if (out / dataset / "manifest.json").is_file():
        return out / dataset
    cmd = [sys.executable, "-m", "mlbench.cli.main", "data", "prepare", dataset]
    cmd += ["--source", str(source), "--out", str(out), "--train", "multi30k/train"]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    size = ["--vocab-size", str(RECIPE_VOCAB)] if dataset == "wmt17" else []
    proc = subprocess.run(cmd + size, capture_output=True, text=True, check=False, env=env)
    most = re.search(
        r"Vocabulary size too high \(\d+\)\. Please set it to a value <= (\d+)", proc.stderr
    )
    if proc.returncode != 0 and most:
        print(f"{dataset}: Multi30k supports at most {most[1]} pieces", file=sys.stderr)
        size = ["--vocab-size", most[1]]
        proc = subprocess.run(cmd + size, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"mlbench data prepare {dataset} failed:\n{proc.stderr[-2000:]}")
    return out / dataset


def _bare_rank(
    ctx: Any, task_name: str, overrides: list[str], steps: int
) -> tuple[float, int, int, int]:
    """One rank of the hand-written loop; returns (seconds, target tokens on this rank,
    parameter count, vocabulary size) for ``steps`` steps."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from mlbench.runs import resolve_config
    from mlbench.train.loop import seed_everything

    task, cfg = resolve_config(task_name, overrides=overrides)
    seed_everything(cfg.seed)
    data = task.build_data(cfg, ctx)
    module = task.build_model(cfg, data.facts)
    model = DistributedDataParallel(module)
    params = sum(p.numel() for p in model.parameters())
    k = ctx.world_size
    u = task.accumulation(cfg, k)  # micro-batches per step, derived from the global batch
    o = cfg.optim
    if task_name == "wmt17-transformer":
        opt = torch.optim.Adam(model.parameters(), lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=o.lr)
    schedule = task.build_schedule(cfg, opt, k, len(data.train) // u)
    clip = cfg.train.clip_grad_norm
    per_token = task.normalize_by == "tokens"
    model.train()
    batches = iter(data.train)
    tokens = 0
    dist.barrier()
    start = time.perf_counter()
    for step in range(steps):
        group = [next(batches) for _ in range(u)]
        mine = [int((b.tgt_out != 0).sum()) for b in group]
        units = sum(mine) if per_token else sum(int(b.src.size(0)) for b in group)
        count = torch.tensor([float(units)])
        dist.all_reduce(count)
        scale = k / count.item()  # DDP averages over k: the sum over all ranks ÷ global count
        opt.zero_grad(set_to_none=True)
        for m, b in enumerate(group):
            with model.no_sync() if m < u - 1 else contextlib.nullcontext():
                logits = model(b.src, b.src_len, b.tgt_in)
                loss = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.size(-1)),
                    b.tgt_out.reshape(-1),
                    ignore_index=0,
                    label_smoothing=o.label_smoothing,
                    reduction="sum",
                )
                (loss * scale).backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        schedule.on_step(step)
        opt.step()
        tokens += sum(mine)
    return time.perf_counter() - start, tokens, params, int(data.facts["vocab_size"])


def measure(
    task_name: str, data_dir: Path, extra: list[str], steps: int, repeats: int, workers: int
) -> str:
    """Both sides for one task, alternating; returns its Markdown section body."""
    from mlbench.testing import run_ranks
    from mlbench.train.timer import STEP_PHASES

    sets = [*SMALL[task_name], "train.precision=fp32", f"train.max_steps={steps}", *extra]
    phases: list[dict[str, float]] = []
    sent: list[float] = []
    facts: list[tuple[int, int]] = []

    with tempfile.TemporaryDirectory() as tmp:

        def ours() -> float:
            args = ["--workers", str(workers), "--threads-per-worker", "1"]
            args += ["--data-dir", str(data_dir)]
            for s in sets:
                args += ["--set", s]
            summary = run_mlbench(task_name, args, Path(tmp))["summary"]
            phases.append({k: v / summary["steps"] for k, v in summary["phases_slowest"].items()})
            sent.append(summary["bytes_sent"] / summary["steps"] / workers)  # summed over ranks
            return float(summary["throughput"])

        def bare() -> float:
            overrides = [f"data.dir={data_dir}", *sets]
            ranks = run_ranks(_bare_rank, workers, task_name, overrides, steps, timeout=3600)
            facts.append((ranks[0][2], ranks[0][3]))
            return sum(r[1] for r in ranks) / max(r[0] for r in ranks)

        mine, ref = interleave(ours, bare, repeats)
    ratio = median(mine) / median(ref)
    params, vocab = facts[0]
    body = table(
        [
            f"{task_name}, {workers} workers × 1 thread, fp32, {steps} steps × {repeats}",
            "tokens/s",
            "÷ bare",
        ],
        [
            ["mlbench (allreduce, full phase timing)", f"{median(mine):.1f}", f"**{ratio:.3f}**"],
            ["bare PyTorch loop (DDP, no_sync)", f"{median(ref):.1f}", "1.000"],
        ],
    )
    # the step's phases only: the final evaluation is outside train time
    split = {k: median([p[k] for p in phases]) for k in STEP_PHASES if k in phases[0]}
    step_ms = 1e3 * sum(split.values())
    return body + (
        f"\n\nOurs ÷ bare: {verdict(ratio, TARGET, True)}. Runs (tokens/s): ours "
        + ", ".join(f"{v:.1f}" for v in mine)
        + "; bare "
        + ", ".join(f"{v:.1f}" for v in ref)
        + f". Model: V = {vocab:,}, {params:,} parameters, {4 * params / 1e6:.1f} MB of fp32 "
        f"gradient all-reduced per step; mlbench counted {median(sent) / 1e6:.1f} MB sent per "
        f"rank per step. Per-step phases (ms of a {step_ms:.0f} ms step, slowest rank): "
        + ", ".join(f"{k} {1e3 * v:.0f}" for k, v in split.items() if v > 0)
        + ".\n"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data-dir",
        default=".data",
        help="root holding wmt/ (Multi30k, newstest2014); --quick also reads its prepared "
        "wmt16/ and wmt17/ (default .data)",
    )
    p.add_argument("--task", choices=(*TASKS, "both"), default="both")
    p.add_argument(
        "--prep-dir",
        default=str(Path(tempfile.gettempdir()) / "mlbench-bench-translation"),
        help="where Multi30k is prepared with the recipes' vocabulary sizes (kept and reused)",
    )
    p.add_argument("--quick", action="store_true", help="1 step, 1 round, tiny models (smoke)")
    p.add_argument("--workers", type=int, default=2, help="gloo workers, 1 thread each")
    p.add_argument("--steps", type=int, default=None, help="steps per run (default 3)")
    p.add_argument("--rounds", type=int, default=None, help="runs of each side (default 3)")
    p.add_argument("--no-record", action="store_true", help="don't append to RESULTS.md")
    args = p.parse_args()
    steps = args.steps or (1 if args.quick else 3)
    repeats = args.rounds or (1 if args.quick else 3)
    root = Path(args.data_dir).resolve()
    tasks = TASKS if args.task == "both" else (args.task,)
    bodies = []
    for name in tasks:
        if args.quick:
            data_dir, extra = root, TINY[name]
        else:
            prepare(DATASET[name], root / "wmt", Path(args.prep_dir))
            data_dir, extra = Path(args.prep_dir), []
        bodies.append(measure(name, data_dir, extra, steps, repeats, args.workers))
    size = "tiny models (smoke)" if args.quick else "full-size models"
    return finish(
        f"4a/4b throughput: {size}, mlbench vs a bare PyTorch loop",
        "\n".join(bodies),
        args.no_record,
    )


if __name__ == "__main__":
    sys.exit(main())
