"""GPU data path (issue 17): does the device, not the loader, set the pace?

Two tasks through the real CLI (`mlbench run TASK --workers 1`, nccl on the GPU), each row a
configuration, the rows run round-robin (a rotating order, so no row always runs on a warmer
machine) and the median of the repeats reported:

* 1a (CIFAR-10, ResNet-20, batch 128): augmentation on the CPU (`data.augment_on=cpu`: pad-crop,
  flip, normalise on the host, then the copy) vs on the device (`device`: the shard resident on
  the GPU, augmented there), then channels-last (`train.channels_last`) and bf16 autocast
  (`train.precision=bf16`) on top.
* 1b (ImageNet, ResNet-50, the task's GPU batch): decoding on the CPU (`data.decode_on=cpu`,
  `--cpu-decode-workers` loader processes) vs nvJPEG on the device (`device`), with
  bf16 + channels-last, and the device path without them. On `--imagenet-data DATA` (a prepared
  ILSVRC2012: `mlbench data prepare imagenet`) or, by default, on a generated tree of real
  CIFAR-10 photographs upscaled to ImageNet's typical sizes (333-500 px sides, JPEG q90, ~10
  classes in the `val/nXXXXXXXX/` layout) — the same decode and resize work per image.

Per row: img/s over all steps (the run's summary: samples / train time), steady img/s and the
`data` phase share over the steps after the first quarter (from the run's window events: worker
start-up and cuDNN autotuning out), and the `data` phase per step.

Without a CUDA device the script exits at once with one line (status 2): these are device
measurements. `--cpu` runs the 1a rows that make sense on a CPU (placement and channels-last,
no bf16) as a sanity check of what the options cost there.

    python benchmarks/gpu_images.py --data-dir .data                        # GPU, ~8 min
    python benchmarks/gpu_images.py --data-dir .data --quick                # GPU smoke, ~2 min
    python benchmarks/gpu_images.py --data-dir .data --imagenet-data DATA   # 1b on ImageNet
    python benchmarks/gpu_images.py --data-dir .data --cpu                  # 1a rows on the CPU
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import REPO, finish, median, run_mlbench, table  # type: ignore[import-not-found]

STEP_PHASES = ("data", "forward", "backward", "communication", "optimizer")

ROWS_1A = [
    ("augment on CPU, fp32", ["data.augment_on=cpu"]),
    ("augment on device, fp32", ["data.augment_on=device"]),
    ("device + channels-last", ["data.augment_on=device", "train.channels_last=true"]),
    ("device + bf16", ["data.augment_on=device", "train.precision=bf16"]),
    (
        "device + bf16 + channels-last",
        ["data.augment_on=device", "train.precision=bf16", "train.channels_last=true"],
    ),
]
ROWS_1B = [
    ("decode on CPU, bf16 + channels-last", ["data.decode_on=cpu"]),
    ("decode on device (nvJPEG), bf16 + channels-last", ["data.decode_on=device"]),
]
FAST = ["train.precision=bf16", "train.channels_last=true"]
ROWS_1B_MODEL = [
    ("decode on device, fp32", ["data.decode_on=device"]),
    ("decode on device, bf16", ["data.decode_on=device", "train.precision=bf16"]),
]


def _steady(run_dir: Path, steps: int) -> tuple[float, float, float]:
    """(img/s, data share, data s/step) over the log windows that start after the first quarter
    of the steps, from rank 0's events (one worker)."""
    from mlbench.telemetry.events import read_events

    windows: dict[int, dict[str, float]] = {}
    for e in read_events(run_dir / "rank-0.jsonl"):
        if e.get("kind") in ("train", "phase"):
            windows.setdefault(int(e.get("step", 0)), {})[e["name"]] = float(e["value"])
    done = sorted(k for k, w in windows.items() if "train_time" in w and "throughput" in w)
    time_ = samples = counted = 0.0
    phases = dict.fromkeys(STEP_PHASES, 0.0)
    for prev, step in zip([0, *done], done, strict=False):
        if prev < steps // 4:
            continue
        w = windows[step]
        time_ += w["train_time"]
        samples += w["throughput"] * w["train_time"]
        counted += step - prev
        for p in STEP_PHASES:
            phases[p] += w.get(p, 0.0)
    if counted == 0:
        return float("nan"), float("nan"), float("nan")
    share = phases["data"] / max(sum(phases.values()), 1e-12)
    return samples / time_, share, phases["data"] / counted


def _measure(task: str, sets: list[str], args: list[str], steps: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        cli = [*args, "--set", f"train.max_steps={steps}"]
        # a window every ~tenth of the run (by steps only), so the steady part has several
        cli += ["--set", f"train.log_every_steps={max(1, steps // 10)}"]
        cli += ["--set", "train.log_every_seconds=0"]
        for s in sets:
            cli += ["--set", s]
        result = run_mlbench(task, cli, runs)
        s = result["summary"]
        (run_dir,) = [p for p in runs.iterdir() if (p / "rank-0.jsonl").exists()]
        steady, share, data_step = _steady(run_dir, steps)
        phases = s["phases_slowest"]
        total = sum(phases.get(p, 0.0) for p in STEP_PHASES)
        return {
            "all": float(s["throughput"]),
            "steady": steady,
            "share_all": phases.get("data", 0.0) / max(total, 1e-12),
            "share": share,
            "data_ms": 1e3 * data_step,
        }


def _round_robin(
    rows: list[tuple[str, list[str]]], run: Any, repeats: int
) -> dict[str, list[dict[str, float] | str]]:
    out: dict[str, list[dict[str, float] | str]] = {name: [] for name, _ in rows}
    for r in range(repeats):
        order = rows[r % len(rows) :] + rows[: r % len(rows)]
        for name, sets in order:
            try:
                out[name].append(run(sets))
            except RuntimeError as exc:  # a row that cannot run says why in its cell
                out[name].append(str(exc))
    return out


def _table(title: str, results: dict[str, list[dict[str, float] | str]]) -> str:
    rows = []
    for name, got in results.items():
        ok = [g for g in got if isinstance(g, dict)]
        if not ok:
            rows.append([name, f"failed: {got[0]}", "", "", ""])
            continue

        def med(key: str, ok: list[dict[str, float]] = ok) -> float:
            return median([g[key] for g in ok])

        rows.append(
            [
                name,
                f"{med('all'):.0f}",
                f"{med('steady'):.0f}",
                f"{100 * med('share'):.1f} %",
                f"{med('data_ms'):.2f}",
            ]
        )
    return table(
        [title, "img/s (all steps)", "img/s (steady)", "`data` share (steady)", "data ms/step"],
        rows,
    )


def _cifar(data_dir: Path) -> tuple[Any, Any]:
    from mlbench.data import cifar10

    directory = cifar10.find(data_dir)
    if directory is None:
        raise SystemExit(f"gpu_images.py: no CIFAR-10 under {data_dir}")
    return cifar10.load_split(directory, "train")


def make_tree(root: Path, data_dir: Path, per_class: int, val_per_class: int) -> None:
    """An ILSVRC-layout tree (train/nXXXX/, val/nXXXX/) of CIFAR-10 photographs upscaled to
    ImageNet's typical sizes, one synthetic WNID per CIFAR class."""
    import numpy as np
    from PIL import Image

    x, y = _cifar(data_dir)
    rng = random.Random(0)
    for c in range(10):
        wnid = f"n{1440764 + c:08d}"
        pool = list(np.flatnonzero(y == c))
        for split, count in (("train", per_class), ("val", val_per_class)):
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                img = Image.fromarray(np.ascontiguousarray(x[pool.pop()].transpose(1, 2, 0)))
                short = rng.randint(333, 375)
                long_ = rng.randint(400, 500)
                size = (long_, short) if rng.random() < 0.75 else (short, long_)
                img = img.resize(size, Image.Resampling.BICUBIC)
                name = (
                    f"{wnid}_{i}.JPEG"
                    if split == "train"
                    else f"ILSVRC2012_val_{c:03d}{i:05d}.JPEG"
                )
                img.save(folder / name, "JPEG", quality=90)


def _prepare(tree: Path, out: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "mlbench.cli.main", "data", "prepare", "imagenet"]
    proc = subprocess.run(
        [*cmd, "--source", str(tree), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"
        raise RuntimeError(f"mlbench data prepare imagenet failed: {last}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=".data", help="root holding cifar10/ (default .data)")
    p.add_argument(
        "--imagenet-data", help="a prepared data dir (DATA/imagenet/manifest.json) for 1b"
    )
    p.add_argument("--quick", action="store_true", help="short runs, 1 each (smoke test)")
    p.add_argument("--cpu", action="store_true", help="no GPU: the 1a rows on the CPU only")
    p.add_argument(
        "--cpu-decode-workers",
        type=int,
        default=max(2, (os.cpu_count() or 2) - 2),
        help="1b decode_on=cpu: loader processes (default: all CPUs but 2)",
    )
    p.add_argument("--no-record", action="store_true", help="don't append to RESULTS.md")
    args = p.parse_args()
    import torch

    if not args.cpu and not torch.cuda.is_available():
        print(
            "gpu_images.py: no CUDA device (torch.cuda.is_available() is False): these are GPU "
            "measurements; run it where a GPU is, or pass --cpu for the 1a rows on the CPU",
            file=sys.stderr,
        )
        return 2
    data_dir = Path(args.data_dir).resolve()
    repeats = 1 if args.quick else (3 if args.cpu else 2)
    steps_1a = (4 if args.quick else 30) if args.cpu else (40 if args.quick else 400)
    base_1a = ["--workers", "1", "--data-dir", str(data_dir), "--set", "data.val_samples=256"]
    rows_1a = [r for r in ROWS_1A if not (args.cpu and "bf16" in r[0])]
    res_1a = _round_robin(
        rows_1a, lambda sets: _measure("cifar10-resnet20", sets, base_1a, steps_1a), repeats
    )
    where = "CPU (--cpu)" if args.cpu else "1 GPU"
    body = _table(f"1a on {where}, {steps_1a} steps", res_1a)
    if not args.cpu:
        body += "\n\n" + _run_1b(args, data_dir, repeats)
    body += (
        "\n\nimg/s (all steps): the run's summary (samples ÷ train time); steady: the windows "
        "after the first quarter of the steps; `data` share = data ÷ the step phases, steady.\n"
    )
    return finish("GPU data path: 1a augmentation and 1b decoding placement", body, args.no_record)


def _run_1b(args: argparse.Namespace, data_dir: Path, repeats: int) -> str:
    steps = 8 if args.quick else 80
    with tempfile.TemporaryDirectory() as tmp:
        note = ""
        if args.imagenet_data:
            prepared = Path(args.imagenet_data).resolve()
            note = f"ImageNet prepared at {prepared}"
        else:
            per_class = 32 if args.quick else 200
            make_tree(Path(tmp) / "tree", data_dir, per_class, 8)
            prepared = Path(tmp) / "data"
            try:
                _prepare(Path(tmp) / "tree", prepared)
            except RuntimeError as exc:
                return f"1b: not measured — {exc}"
            note = (
                f"a generated tree: {10 * per_class} CIFAR-10 photographs upscaled to "
                "333-500 px, JPEG q90, 10 classes"
            )
        base = [
            "--workers",
            "1",
            "--data-dir",
            str(prepared),
            "--set",
            "data.val_samples=256",
        ]

        def run(sets: list[str]) -> dict[str, float]:
            extra = list(sets)
            if "data.decode_on=cpu" in sets:
                extra.append(f"data.workers={args.cpu_decode_workers}")
            return _measure("imagenet-resnet50", extra, base, steps)

        rows = [(n, [*s, *FAST]) for n, s in ROWS_1B] + ROWS_1B_MODEL
        res = _round_robin(rows, run, repeats)
    return (
        _table(f"1b ResNet-50 on 1 GPU, {steps} steps", res)
        + f"\n\n1b data: {note}; decode_on=cpu with data.workers={args.cpu_decode_workers}."
    )


if __name__ == "__main__":
    sys.exit(main())
