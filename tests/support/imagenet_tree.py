"""A small ILSVRC2012 tree of real photographs, written at test time (no ImageNet here).

The pictures are real CIFAR-10 images (from the ``real_data`` fixture) upscaled to varied sizes
and aspect ratios and saved as JPEG, one WNID per CIFAR class, so labels are learnable and files
look like ImageNet's: ``train/nXXXXXXXX/nXXXXXXXX_N.JPEG``, a flat
``val/ILSVRC2012_val_000000NN.JPEG`` with the devkit's ground truth (ILSVRC2012 ids, one per
line) and ``meta.mat``, or the common ``val/nXXXXXXXX/`` re-layout. The known oddities of the
real set are planted: a grayscale JPEG, a CMYK JPEG and a PNG named ``.JPEG`` in train, a CMYK
JPEG in val.

The devkit's ids are deliberately *not* in sorted-WNID order (the real devkit's are not either:
id 1 is n02119789, kit fox), and ``meta.mat`` holds a non-leaf synset too, so a reader that maps
ground truth through sorted order or forgets to drop inner nodes gets wrong labels.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# the first ten WNIDs of ILSVRC2012 in sorted order (real ids: tench, goldfish, ...)
WNIDS = (
    "n01440764",
    "n01443537",
    "n01484850",
    "n01491361",
    "n01494475",
    "n01496331",
    "n01498041",
    "n01514668",
    "n01514859",
    "n01518878",
)
DEVKIT = "ILSVRC2012_devkit_t12"
GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"


@dataclass
class ImageNetTree:
    """What was written, with the labels a correct reader must produce (sorted-WNID index)."""

    root: Path
    wnids: list[str]
    train: list[tuple[str, int]] = field(default_factory=list)  # (path under root, label)
    val: list[tuple[str, int]] = field(default_factory=list)
    ilsvrc_ids: dict[str, int] = field(default_factory=dict)  # WNID -> devkit id
    odd: dict[str, str] = field(default_factory=dict)  # "gray"/"cmyk"/"png"/"val-cmyk" -> path

    @property
    def devkit(self) -> Path:
        return self.root / DEVKIT


def _cifar(cifar_root: Path) -> tuple[np.ndarray, np.ndarray]:
    from mlbench.data import cifar10

    directory = cifar10.find(cifar_root)
    assert directory is not None, f"no CIFAR-10 under {cifar_root}"
    x, y = cifar10.load_split(directory, "test")  # [N,3,32,32] uint8, [N]
    return x, y


def _photo(
    pixels: np.ndarray, rng: random.Random, short_side: tuple[int, int] = (48, 120)
) -> object:
    """A CIFAR image upscaled to a random size (shorter side in ``short_side``, 48-200 px by
    default) and aspect ratio (0.6-1.7)."""
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0)))
    short = rng.randint(*short_side)
    ratio = rng.uniform(0.6, 1.7)
    w, h = (round(short * ratio), short) if ratio >= 1 else (short, round(short / ratio))
    return img.resize((w, h), Image.Resampling.BICUBIC)


def write_meta_mat(path: Path, ilsvrc_ids: dict[str, int]) -> None:
    """``meta.mat`` as the devkit ships it: a ``synsets`` struct array, leaves (num_children 0)
    with ids 1..K, plus one inner node (id K+1, children) that readers must skip."""
    import scipy.io

    fields = [
        "ILSVRC2012_ID",
        "WNID",
        "words",
        "gloss",
        "num_children",
        "children",
        "wordnet_height",
        "num_train_images",
    ]
    rows = [
        (i, w, f"class {w}", f"gloss of {w}", 0, np.zeros((0,)), 0, 8)
        for w, i in sorted(ilsvrc_ids.items(), key=lambda kv: kv[1])
    ]
    inner = len(rows) + 1
    rows.append((inner, "n00001740", "entity", "the root", 2, np.array([1, 2]), 5, 0))
    synsets = np.zeros((len(rows), 1), dtype=[(f, "O") for f in fields])
    for r, row in enumerate(rows):
        for f, v in zip(fields, row, strict=True):
            synsets[r, 0][f] = v
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"synsets": synsets})


def make_tree(
    root: Path,
    cifar_root: Path,
    *,
    classes: int = 5,
    train_per_class: int = 8,
    val_per_class: int = 4,
    val_layout: str = "flat",
    oddities: bool = True,
    seed: int = 0,
    short_side: tuple[int, int] = (48, 120),
) -> ImageNetTree:
    """Write the tree under ``root`` and return what a reader must find there. ``short_side``
    bounds the pictures' shorter side: small for fast tests; ``benchmarks/image_decode.py``
    asks for ImageNet's sizes (~400 x 350 on average)."""
    from PIL import Image

    assert 1 <= classes <= len(WNIDS) and val_layout in ("flat", "folders")
    rng = random.Random(seed)
    x, y = _cifar(cifar_root)
    wnids = sorted(WNIDS[:classes])
    order = list(range(1, classes + 1))
    order.reverse()  # devkit ids run against sorted order
    tree = ImageNetTree(root, wnids, ilsvrc_ids=dict(zip(wnids, order, strict=True)))
    pools = {c: list(np.flatnonzero(y == c)) for c in range(classes)}
    for c, wnid in enumerate(wnids):
        folder = root / "train" / wnid
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(train_per_class):
            rel = f"train/{wnid}/{wnid}_{i + 1}.JPEG"
            _photo(x[pools[c].pop()], rng, short_side).save(root / rel, "JPEG", quality=90)  # type: ignore[attr-defined]
            tree.train.append((rel, c))
    val: list[tuple[int, int]] = []  # (cifar index, label)
    for c in range(classes):
        val += [(pools[c].pop(), c) for _ in range(val_per_class)]
    rng.shuffle(val)
    gt_lines = []
    for n, (idx, c) in enumerate(val, start=1):
        name = f"ILSVRC2012_val_{n:08d}.JPEG"
        rel = f"val/{name}" if val_layout == "flat" else f"val/{wnids[c]}/{name}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        _photo(x[idx], rng, short_side).save(root / rel, "JPEG", quality=90)  # type: ignore[attr-defined]
        tree.val.append((rel, c))
        gt_lines.append(f"{tree.ilsvrc_ids[wnids[c]]}\n")
    if val_layout == "flat":
        data = tree.devkit / "data"
        data.mkdir(parents=True, exist_ok=True)
        (data / GROUND_TRUTH).write_text("".join(gt_lines))
        write_meta_mat(data / "meta.mat", tree.ilsvrc_ids)
    if oddities:
        gray, cmyk, png = (tree.train[i][0] for i in (0, 1, 2))
        with Image.open(root / gray) as im:
            im.convert("L").save(root / gray, "JPEG", quality=90)
        with Image.open(root / cmyk) as im:
            im.convert("CMYK").save(root / cmyk, "JPEG", quality=90)
        with Image.open(root / png) as im:
            im.convert("RGB").save(root / png, "PNG")  # a PNG named .JPEG, as in ILSVRC train
        vcmyk = tree.val[0][0]
        with Image.open(root / vcmyk) as im:
            im.convert("CMYK").save(root / vcmyk, "JPEG", quality=90)
        tree.odd = {"gray": gray, "cmyk": cmyk, "png": png, "val-cmyk": vcmyk}
    return tree
