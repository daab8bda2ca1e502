"""ILSVRC2012 (ImageNet-1k, task 1b): the official tree, its labels, and the prepared manifest.

The images are never copied: ``mlbench data prepare imagenet --source DIR --out DATA`` checks
the tree where it lies (:mod:`mlbench.data.imagenet_prepare`) and writes
``DATA/imagenet/manifest.json``, which names the source folder and every image with its label,
size and sha256. A run reads the manifest (:func:`load`), not the tree: listing 1.33 M files on
a network disk at every start would cost minutes.

**Layout** (what the official tarballs extract to, see ``docs/data.md``):

* ``train/nXXXXXXXX/*.JPEG`` — one folder per class; the label is the position of the WNID in
  sorted order (what every reference implementation's folder reader produces);
* ``val/ILSVRC2012_val_000NNNNN.JPEG`` flat, labelled by the devkit (``ILSVRC2012_devkit_t12/``
  extracted in the source, or the ``ILSVRC2012_devkit_t12.tar.gz`` itself): line N of
  ``data/ILSVRC2012_validation_ground_truth.txt`` is the ILSVRC2012_ID of image N, and
  ``data/meta.mat`` maps ids to WNIDs. Those ids are *not* in sorted-WNID order (id 1 is
  n02119789, kit fox; label 0 is n01440764, tench), and ``meta.mat`` also lists the inner nodes of
  the WordNet hierarchy, which must be dropped (``num_children`` 0 are the 1000 classes). Reading
  val in sorted order instead gives a model ~0.1 % top-1 with no other symptom;
* or the common re-layout ``val/nXXXXXXXX/*.JPEG`` (no devkit needed; its classes must be
  exactly train's).

Image files are those whose extension is ``.JPEG``, ``.jpeg`` or ``.jpg`` (any case), as the
official files are named; they are decoded by content, so the PNG saved as ``.JPEG`` in train is
read as what it is. Anything else (the per-class ``nXXXXXXXX.tar`` left next to the folders,
``.DS_Store``, names starting with a dot such as macOS ``._`` files) is *ignored*, counted in the
manifest and reported, not refused: real copies of the set carry such leftovers. What cannot be
labelled is refused: a folder in ``train/`` or ``val/`` that is not a WNID, a flat val image not
named ``ILSVRC2012_val_NNNNNNNN``, a val layout that mixes both.

A tree smaller than :data:`OFFICIAL` (a subset, the tests' tiny tree) is prepared and loaded
like the real one; the manifest records that it is not the official set, and a task marks its
runs non-official.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlbench.errors import DataError

#: ILSVRC2012's size: classes, train images, val images
OFFICIAL = (1000, 1_281_167, 50_000)
MANIFEST = "manifest.json"
FOLDER = "imagenet"
FORMAT = 1
DEVKIT = "ILSVRC2012_devkit_t12"
GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
META = "meta.mat"
IMAGE_SUFFIXES = (".jpeg", ".jpg")
PREPARE = "mlbench data prepare imagenet --source DIR --out DATA"
SPLITS = ("train", "val")

_WNID = re.compile(r"n\d{8}")
_VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})\.(?:jpeg|jpg)", re.IGNORECASE)

Progress = Callable[[str], None]
Pairs = tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class ImageNetIndex:
    """Every image of the tree with its label: what :func:`scan` finds and :func:`load` reads."""

    source: Path  # absolute root of the tree (train/, val/, the devkit)
    wnids: tuple[str, ...]  # sorted; class index = position
    train: Pairs  # (path relative to source, label), by class then file name
    val: Pairs  # by file name (= image number for ILSVRC2012_val_N)
    val_layout: str  # "flat" (devkit ground truth) or "folders"
    #: files skipped because they are not images (relative paths); from :func:`scan` only
    ignored: tuple[str, ...] = field(default=(), compare=False, repr=False)
    #: the manifest without its per-file columns (counts, official, odd files...); from
    #: :func:`load` only
    manifest: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    def files(self, split: str) -> tuple[list[str], list[int]]:
        """Absolute paths and labels of ``split`` ("train" or "val"), in index order."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
        pairs = self.train if split == "train" else self.val
        root = str(self.source)
        return [f"{root}/{rel}" for rel, _ in pairs], [label for _, label in pairs]

    @property
    def counts(self) -> tuple[int, int, int]:
        """(classes, train images, val images), comparable with :data:`OFFICIAL`."""
        return len(self.wnids), len(self.train), len(self.val)

    @property
    def official(self) -> bool:
        return self.counts == OFFICIAL


# -- scanning the tree ------------------------------------------------------------------------


def _is_image(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _entries(folder: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as exc:
        raise DataError(f"cannot list {folder}: {exc.strerror or exc}") from None


def _top(source: Path, split: str) -> tuple[list[str], list[str], list[str]]:
    """Sub-folders (WNIDs), image files and ignored names directly in ``source/split``."""
    folder = source / split
    if not folder.is_dir():
        raise DataError(
            f"{folder} is missing: the ImageNet source needs train/ and val/ (see "
            "`mlbench data prepare --help` for the official files and how to extract them)"
        )
    dirs, images, ignored = [], [], []
    for e in _entries(folder):
        if e.name.startswith("."):
            ignored.append(f"{split}/{e.name}")
        elif e.is_dir():
            if not _WNID.fullmatch(e.name):
                raise DataError(
                    f"{folder / e.name} is not a class folder (a WNID such as n01440764): "
                    f"{split}/ must hold nXXXXXXXX/ folders"
                    + (" or the flat ILSVRC2012_val_NNNNNNNN.JPEG files" if split == "val" else "")
                )
            dirs.append(e.name)
        elif _is_image(e.name):
            images.append(e.name)
        else:
            ignored.append(f"{split}/{e.name}")
    return dirs, images, ignored


def _class_images(source: Path, split: str, wnid: str, ignored: list[str]) -> list[str]:
    """Relative paths of the images in ``source/split/wnid`` (sorted); empty is an error."""
    found = []
    for e in _entries(source / split / wnid):
        rel = f"{split}/{wnid}/{e.name}"
        if _is_image(e.name) and e.is_file():
            found.append(rel)
        else:
            ignored.append(rel)
    if not found:
        raise DataError(
            f"{source / split / wnid} holds no images (*.JPEG): an unextracted class tar, or an "
            "interrupted extraction"
        )
    return found


def _differ(a_name: str, a: Iterable[str], b_name: str, b: Iterable[str]) -> str:
    sa, sb = set(a), set(b)
    only_a, only_b = sorted(sa - sb), sorted(sb - sa)
    example = f"{only_a[0]} only in {a_name}" if only_a else f"{only_b[0]} only in {b_name}"
    return (
        f"the classes differ: {a_name} has {len(sa)} WNIDs, {b_name} {len(sb)} "
        f"({len(only_a) + len(only_b)} not in both, e.g. {example})"
    )


def read_devkit(source: Path) -> tuple[bytes, bytes, str]:
    """The ground truth and ``meta.mat`` bytes, and where they were read (for messages): the
    extracted ``ILSVRC2012_devkit_t12/data/``, else the tarball read in memory."""
    folder = source / DEVKIT / "data"
    if folder.is_dir():
        try:
            return (folder / GROUND_TRUTH).read_bytes(), (folder / META).read_bytes(), str(folder)
        except OSError as exc:
            raise DataError(f"devkit file unreadable: {exc.filename}: {exc.strerror}") from None
    tarball = source / f"{DEVKIT}.tar.gz"
    if tarball.is_file():
        wanted = {f"{DEVKIT}/data/{GROUND_TRUTH}": b"", f"{DEVKIT}/data/{META}": b""}
        try:
            with tarfile.open(tarball, "r:gz") as tar:
                for member in tar:
                    name = member.name.removeprefix("./")
                    if name in wanted and member.isfile():
                        f = tar.extractfile(member)
                        assert f is not None  # a regular member always has a file object
                        wanted[name] = f.read()
        except (OSError, tarfile.TarError, EOFError) as exc:
            raise DataError(f"{tarball} is not a complete .tar.gz ({exc})") from None
        missing = [n for n, data in wanted.items() if not data]
        if missing:
            raise DataError(f"{tarball} lacks {missing[0]}: not the ILSVRC2012 devkit")
        gt, meta = wanted.values()
        return gt, meta, str(tarball)
    raise DataError(
        f"val/ in {source} is flat (ILSVRC2012_val_NNNNNNNN.JPEG) but there is no devkit to "
        f"label it: put {DEVKIT}.tar.gz, or {DEVKIT}/ extracted, in {source} (or re-layout val/ "
        "into val/nXXXXXXXX/ folders)"
    )


def _ground_truth(data: bytes, where: str) -> list[int]:
    lines = data.decode("ascii", errors="replace").split("\n")
    if lines and lines[-1].strip() == "":
        lines.pop()
    ids = []
    for n, line in enumerate(lines, start=1):
        try:
            ids.append(int(line.strip()))
        except ValueError:
            raise DataError(
                f"{where}/{GROUND_TRUTH} line {n} is {line.strip()[:30]!r}, not an ILSVRC2012_ID"
            ) from None
    return ids


def _leaves(data: bytes, where: str) -> dict[int, str]:
    """ILSVRC2012_ID → WNID of the leaf synsets (``num_children`` 0) in ``meta.mat``."""
    import scipy.io

    try:
        synsets = scipy.io.loadmat(io.BytesIO(data), squeeze_me=True)["synsets"]
        rows = zip(
            np.atleast_1d(synsets["ILSVRC2012_ID"]),
            np.atleast_1d(synsets["WNID"]),
            np.atleast_1d(synsets["num_children"]),
            strict=True,
        )
        leaves = {int(i): str(w) for i, w, kids in rows if int(kids) == 0}
    except Exception as exc:  # scipy raises many types for a file that is not this .mat
        raise DataError(
            f"{where}/{META} is not the devkit's meta.mat (no readable synsets table: "
            f"{type(exc).__name__}: {str(exc)[:80]})"
        ) from None
    if not leaves:
        raise DataError(f"{where}/{META} lists no leaf synsets (num_children 0)")
    return leaves


def _val_flat(source: Path, names: list[str], wnids: tuple[str, ...]) -> Pairs:
    numbered: dict[int, str] = {}
    for name in names:
        m = _VAL_NAME.fullmatch(name)
        if m is None:
            raise DataError(
                f"{source / 'val' / name} is not named ILSVRC2012_val_NNNNNNNN.JPEG: a flat val/ "
                "is labelled by the image number in the name"
            )
        n = int(m.group(1))
        if n in numbered:
            raise DataError(f"val/ holds image {n} twice: {numbered[n]} and {name}")
        numbered[n] = name
    gt, meta, where = read_devkit(source)
    ids = _ground_truth(gt, where)
    if len(ids) != len(numbered):
        raise DataError(
            f"{where}/{GROUND_TRUTH} has {len(ids)} lines but val/ holds {len(numbered)} images: "
            "one line per val image (an incomplete val/ or another year's devkit)"
        )
    leaves = _leaves(meta, where)
    if set(leaves.values()) != set(wnids):
        raise DataError(_differ("train/", wnids, f"{where}/{META} (leaves)", leaves.values()))
    label = {w: i for i, w in enumerate(wnids)}
    val = []
    for n in sorted(numbered):
        if n > len(ids):
            raise DataError(
                f"val/{numbered[n]}: image number {n} but the ground truth has {len(ids)} lines"
            )
        wnid = leaves.get(ids[n - 1])
        if wnid is None:
            raise DataError(
                f"{where}/{GROUND_TRUTH} line {n}: ILSVRC2012_ID {ids[n - 1]} is not a leaf "
                f"synset of {META} (the {len(leaves)} classes' ids)"
            )
        val.append((f"val/{numbered[n]}", label[wnid]))
    return tuple(val)


def scan(source: Path) -> ImageNetIndex:
    """Walk ``source`` and label every image; any problem is a one-line :class:`DataError`.

    Lists directories only (no stat of each file, no decoding): a few seconds for the real set
    on a local disk. Train is ordered by class then file name, val by file name in both layouts
    (for ``ILSVRC2012_val_N`` names: image number), so the two val layouts give the same order.
    """
    source = Path(source).absolute()
    if not source.is_dir():
        raise DataError(f"ImageNet source {source} is not a folder")
    class_dirs, stray, ignored = _top(source, "train")
    ignored += [f"train/{name}" for name in stray]  # images outside a class folder: no label
    if not class_dirs:
        raise DataError(f"{source / 'train'} holds no class folders (nXXXXXXXX/)")
    wnids = tuple(class_dirs)
    train = tuple(
        (rel, label)
        for label, wnid in enumerate(wnids)
        for rel in _class_images(source, "train", wnid, ignored)
    )
    val_dirs, val_images, val_ignored = _top(source, "val")
    ignored += val_ignored
    if val_dirs and val_images:
        raise DataError(
            f"{source / 'val'} mixes class folders ({val_dirs[0]}/) and flat images "
            f"({val_images[0]}): use one layout"
        )
    if val_dirs:
        unknown = [w for w in val_dirs if w not in set(wnids)]
        if unknown:
            raise DataError(
                f"{source / 'val' / unknown[0]} is a val class with no train/ folder "
                f"({len(unknown)} such)"
            )
        if set(val_dirs) != set(wnids):
            raise DataError(_differ("train/", wnids, "val/", val_dirs))
        label = {w: i for i, w in enumerate(wnids)}
        pairs = [
            (rel, label[w]) for w in val_dirs for rel in _class_images(source, "val", w, ignored)
        ]
        pairs.sort(key=lambda p: (p[0].rsplit("/", 1)[1], p[0]))
        return ImageNetIndex(source, wnids, train, tuple(pairs), "folders", tuple(ignored))
    if not val_images:
        raise DataError(f"{source / 'val'} holds no images")
    val = _val_flat(source, val_images, wnids)
    return ImageNetIndex(source, wnids, train, val, "flat", tuple(ignored))


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_bytes())
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise DataError(f"{path} is not valid JSON ({exc}): run `{PREPARE}` again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{path} is not an ImageNet manifest of format {FORMAT}: run `{PREPARE}`")
    return manifest


def manifest_header(manifest: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in manifest.items() if k not in SPLITS}


def prepare(
    source: Path,
    out: Path,
    *,
    workers: int = 1,
    progress: Progress | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Check the tree in ``source`` (every image read, hashed and decoded in ``workers``
    processes) and write ``out/imagenet/manifest.json``; returns the manifest without its
    per-file columns. See :mod:`mlbench.data.imagenet_prepare`, where the work is."""
    from mlbench.data import imagenet_prepare

    return imagenet_prepare.prepare(source, out, workers=workers, progress=progress, force=force)


# -- loading ---------------------------------------------------------------------------------


def load(data_dir: Path) -> ImageNetIndex:
    """The index recorded in ``data_dir/imagenet/manifest.json`` (1.33 M entries: ~1 s).

    Checks that the source tree is still there (its train/ and val/, the first image of each),
    not every file: the checksums are for auditing and for :func:`prepare`'s re-run.
    """
    path = Path(data_dir) / FOLDER / MANIFEST
    if not path.is_file():
        raise DataError(
            f"no prepared ImageNet in {data_dir} ({FOLDER}/{MANIFEST} missing): run "
            f"`mlbench data prepare imagenet --source DIR --out {data_dir}` on the extracted "
            "ILSVRC2012 tree first"
        )
    m = read_manifest(path)
    try:
        source = Path(m["source"])
        pairs = {
            s: tuple(zip(m[s]["paths"], m[s]["labels"], strict=True))
            for s in SPLITS  # (a strict zip: columns of one length)
        }
        index = ImageNetIndex(
            source,
            tuple(m["wnids"]),
            pairs["train"],
            pairs["val"],
            m["val_layout"],
            manifest=manifest_header(m),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(
            f"{path} is malformed ({type(exc).__name__}: {exc}): run `{PREPARE}`"
        ) from None
    for split, pairs_ in (("train", index.train), ("val", index.val)):
        first = source / pairs_[0][0] if pairs_ else source / split
        if not first.exists():
            raise DataError(
                f"the ImageNet source recorded in {path} is gone ({first} does not exist): "
                f"mount it again, or prepare again with `{PREPARE}`"
            )
    return index
