"""1b: decode + augment images/s per core, Pillow against simplejpeg, and the image loader end
to end.

Two sets of JPEGs (quality 90) at ImageNet's sizes, their bytes read into memory first (this
measures decoding and augmentation, not the disk):

* ``cifar-up``: real CIFAR-10 pictures upscaled (shorter side 300-450 px, aspect 0.6-1.7) by the
  test tree's own writer (``tests/support/imagenet_tree.make_tree``). Upscaled pictures are
  smooth: their files are ~5x smaller than ImageNet's ~110 KB and cheap to entropy-decode;
* ``photos``: random crops (shorter side 300-427 px) of the three full-detail photographs our
  dependencies ship (scikit-learn's ``china.jpg`` and ``flower.jpg``, matplotlib's
  ``grace_hopper.jpg``): files of ImageNet's weight, so the decoder's share is realistic.

Pipelines, each on the same files with the same crop boxes, one process, one thread (a core),
interleaved round by round so machine noise hits all alike:

* train: RandomResizedCrop 224 (torchvision's box sampling) + horizontal flip;
* val: resize the shorter side to 256, centre-crop 224 (as one box of the original);

decoded by

* ``pillow``: ``Image.open(...).convert("RGB")`` — torchvision's default loader — then the
  crop + bilinear resize + flip in Pillow;
* ``pillow+draft``: the same with Pillow's reduced-scale JPEG decode (``draft``) where the box
  allows;
* ``simplejpeg``: simplejpeg's full decode, then the same resize (``crops.decode_crop`` with
  ``scaled=False``);
* ``simplejpeg+dct``: what the loader does (``crops.decode_crop``): simplejpeg's DCT-scaled
  decode where the box allows.

Then the resize step alone, three ways (``box=``, crop-then-resize, ``reducing_gap=2``), and the
loader end to end (``ImageStreamLoader``, train, batch 32, on ``photos``) in the rank and with 1 and
2 worker processes. Target: on ``photos``, one core decodes + augments >= 215 training images/s on
the loader's path: an H100 trains ResNet-50 at ~3000 img/s, and a DGX H100 has 14 CPU cores per GPU
(112 / 8), so at that rate the CPU path keeps the GPU fed without the device decoder.

    python benchmarks/image_decode.py --data-dir .data            # full (~3 min)
    python benchmarks/image_decode.py --data-dir .data --quick    # < 1 minute (smoke)
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from common import REPO, finish, median, table, verdict  # type: ignore[import-not-found]

sys.path.insert(0, str(REPO))

from tests.support.imagenet_tree import make_tree

from mlbench.data.crops import (
    center_crop_box,
    decode_crop,
    image_size,
    min_decode_size,
    random_resized_crop_box,
)
from mlbench.data.decode import decode_rgb

TARGET = 215.0  # images/s per core: 3000 img/s per H100 over 14 cores (a DGX H100's ratio)
SIZE = 224
Box = tuple[int, int, int, int]


def pillow(data: bytes, box: Box, original: tuple[int, int], flip: bool, draft: bool) -> np.ndarray:
    """Pillow only: decode (optionally at a reduced DCT scale), crop + resize + flip."""
    from PIL import Image

    height, width = original
    with Image.open(io.BytesIO(data)) as im:
        m = min_decode_size(box, height, width, SIZE) if draft else 0
        if m:
            im.draft("RGB", (m, m))
        rgb = im.convert("RGB")
    sy, sx = rgb.height / height, rgb.width / width
    t, left, h, w = box
    out = rgb.resize(
        (SIZE, SIZE),
        Image.Resampling.BILINEAR,
        box=(left * sx, t * sy, (left + w) * sx, (t + h) * sy),
    )
    if flip:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(out)


def pipelines() -> dict[str, Callable[[bytes, Box, tuple[int, int], bool], np.ndarray]]:
    return {
        "pillow": lambda d, b, o, f: pillow(d, b, o, f, draft=False),
        "pillow+draft": lambda d, b, o, f: pillow(d, b, o, f, draft=True),
        "simplejpeg": lambda d, b, o, f: decode_crop(d, b, o, SIZE, f, scaled=False),
        "simplejpeg+dct": lambda d, b, o, f: decode_crop(d, b, o, SIZE, f),
    }


def rates(
    datas: list[bytes], jobs: list[tuple[Box, tuple[int, int], bool]], repeats: int
) -> dict[str, list[float]]:
    """images/s of every pipeline over all images, round-robin ``repeats`` times (the order
    rotates each round so no pipeline always runs first)."""
    fns = pipelines()
    out: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn = fns[name]
            start = time.perf_counter()
            for data, (box, original, flip) in zip(datas, jobs, strict=True):
                fn(data, box, original, flip)
            out[name].append(len(datas) / (time.perf_counter() - start))
    return out


def resize_variants(
    datas: list[bytes], jobs: list[tuple[Box, tuple[int, int], bool]]
) -> list[list[str]]:
    """The resize step alone on full decodes: ms per image and the mean |difference| from
    ``box=`` (0-255 levels)."""
    from PIL import Image

    images = [Image.fromarray(decode_rgb(d)) for d in datas]
    bl = Image.Resampling.BILINEAR

    def run(how: str) -> tuple[float, list[np.ndarray]]:
        outs = []
        start = time.perf_counter()
        for img, (box, _, _) in zip(images, jobs, strict=True):
            t, left, h, w = box
            edges = (left, t, left + w, t + h)
            if how == "box":
                o = img.resize((SIZE, SIZE), bl, box=edges)
            elif how == "crop":
                o = img.crop(edges).resize((SIZE, SIZE), bl)
            else:
                o = img.resize((SIZE, SIZE), bl, box=edges, reducing_gap=2.0)
            outs.append(np.asarray(o, dtype=np.float32))
        return (time.perf_counter() - start) / len(images) * 1e3, outs

    base_ms, base = run("box")
    rows = [["`resize(box=...)` (used)", f"{base_ms:.2f}", "0"]]
    for how, label in (("crop", "`crop().resize()`"), ("gap", "`resize(box=..., reducing_gap=2)`")):
        ms, outs = run(how)
        diff = np.mean([np.abs(a - b).mean() for a, b in zip(outs, base, strict=True)])
        rows.append([label, f"{ms:.2f}", f"{diff:.2f}"])
    return rows


def loader_rates(
    files: list[str], labels: list[int], workers: int, batch: int, epochs: int
) -> list[str]:
    import torch

    from mlbench.data.imagestream import ImageStreamLoader

    torch.set_num_threads(1)
    loader = ImageStreamLoader(
        files, labels, batch, train=True, rank=0, world_size=1, seed=0, workers=workers
    )
    start = time.perf_counter()
    it = iter(loader)
    next(it)
    first = time.perf_counter() - start
    n, start = 0, time.perf_counter()
    for x, _ in it:
        n += len(x)
    for epoch in range(1, epochs):
        loader.set_epoch(epoch)
        n += sum(len(x) for x, _ in loader)
    rate = n / (time.perf_counter() - start)
    loader.close()
    label = f"{workers} worker process{'es' if workers != 1 else ''}" if workers else "in the rank"
    return [label, f"{first:.2f}", f"{rate:.0f}"]


def photo_set(out: Path, count: int, seed: int = 0) -> list[str]:
    """``count`` random crops of the sample photographs, saved as JPEG under ``out``."""
    import random

    import matplotlib
    import sklearn
    from PIL import Image

    sources = [
        Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg",
        Path(sklearn.__file__).parent / "datasets" / "images" / "flower.jpg",
        Path(matplotlib.__file__).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg",
    ]
    pictures = [Image.open(p).convert("RGB") for p in sources]
    rng = random.Random(seed)
    files = []
    for i in range(count):
        pic = pictures[i % len(pictures)]
        short = rng.randint(300, min(pic.size))
        ratio = rng.uniform(0.75, 1.5)
        w = min(pic.width, round(short * ratio)) if pic.width >= pic.height else short
        h = short if pic.width >= pic.height else min(pic.height, round(short * ratio))
        left, top = rng.randint(0, pic.width - w), rng.randint(0, pic.height - h)
        crop = pic.crop((left, top, left + w, top + h))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        path = out / f"photo_{i}.JPEG"
        crop.save(path, "JPEG", quality=90)
        files.append(str(path))
    return files


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=".data", help="root holding cifar10/ (default .data)")
    p.add_argument("--quick", action="store_true", help="few images, 2 rounds (smoke, < 1 min)")
    p.add_argument("--per-class", type=int, default=40, help="images per class, 10 classes")
    p.add_argument("--no-record", action="store_true", help="don't append to RESULTS.md")
    args = p.parse_args()
    per_class = 4 if args.quick else args.per_class
    repeats = 2 if args.quick else 5

    sets: dict[str, list[str]] = {}
    results: dict[tuple[str, str], dict[str, list[float]]] = {}
    facts: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        tree = make_tree(
            Path(tmp) / "tree",
            Path(args.data_dir),
            classes=10,
            train_per_class=per_class,
            val_per_class=0,
            oddities=False,
            short_side=(300, 450),
        )
        sets["cifar-up"] = [str(tree.root / rel) for rel, _ in tree.train]
        (Path(tmp) / "photos").mkdir()
        sets["photos"] = photo_set(Path(tmp) / "photos", 10 * per_class)
        for name, files in sets.items():
            datas = [Path(f).read_bytes() for f in files]
            sizes = [image_size(d) for d in datas]
            rng = np.random.default_rng(0)
            train_jobs = [
                (random_resized_crop_box(h, w, rng), (h, w), bool(rng.random() < 0.5))
                for h, w in sizes
            ]
            val_jobs = [(center_crop_box(h, w), (h, w), False) for h, w in sizes]
            for fn in pipelines().values():  # warm-up (imports, first allocations)
                fn(datas[0], *train_jobs[0])
            results[(name, "train")] = rates(datas, train_jobs, repeats)
            results[(name, "val")] = rates(datas, val_jobs, repeats)
            facts.append(
                f"`{name}`: {len(datas)} files, mean "
                f"{np.mean([w for _, w in sizes]):.0f} x {np.mean([h for h, _ in sizes]):.0f} px, "
                f"{np.mean([len(d) for d in datas]) / 1024:.0f} KB"
            )
            if name == "photos":
                resize_rows = resize_variants(datas[:100], train_jobs[:100])
        files = sets["photos"]
        labels = [i % 3 for i in range(len(files))]
        batch = 8 if args.quick else 32
        loader_rows = [
            loader_rates(files, labels, w, batch, 1 if args.quick else 2) for w in (0, 1, 2)
        ]

    rows = []
    for (name, split), res in results.items():
        base = median(res["pillow"])
        for decoder, values in res.items():
            m = median(values)
            rows.append(
                [
                    name,
                    split,
                    f"`{decoder}`",
                    f"{m:.0f}",
                    f"{min(values):.0f}–{max(values):.0f}",
                    f"{m / base:.2f}×",
                    f"{3000 / m:.1f}",
                ]
            )
    header = [
        "images",
        "pipeline",
        "decoder",
        "images/s per core",
        "range",
        "vs pillow",
        "cores for 3000 img/s",
    ]
    ours = median(results[("photos", "train")]["simplejpeg+dct"])
    ratio = ours / median(results[("photos", "train")]["pillow"])
    body = (
        "; ".join(facts)
        + f". Medians of {repeats} interleaved rounds, one process, one thread.\n\n"
        + table(header, rows)
        + f"\n\nTrain on `photos`, the loader's path: **{ours:.0f} images/s per core**, "
        + f"{verdict(ours, TARGET, True)}; {ratio:.2f}× torchvision's Pillow loader.\n\n"
        + "The resize step alone (`photos`, full decodes, train boxes):\n\n"
        + table(["resize", "ms per image", "mean abs diff vs box= (levels)"], resize_rows)
        + f"\n\nThe loader end to end (`photos`, train, batch {batch}, 224 px):\n\n"
        + table(["decoding in", "first batch s (incl. start-up)", "images/s after it"], loader_rows)
        + "\n"
    )
    return finish("1b: image decode + augment per core, and the image loader", body, args.no_record)


if __name__ == "__main__":
    sys.exit(main())
