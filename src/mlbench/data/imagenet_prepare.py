"""``mlbench data prepare imagenet``: every image of an ILSVRC2012 tree read, hashed and decoded,
and the manifest that :func:`mlbench.data.imagenet.load` reads written last.

Why decode everything once, up front: the real set holds files a careless pipeline trips on
(a PNG named ``.JPEG``, CMYK JPEGs) and a copy can hold truncated ones; finding one in epoch 37
on rank 5 costs a run, finding it here costs one line naming the file. The work is
embarrassingly parallel (one file at a time), so it runs in ``workers`` spawned processes over
chunks of files, in order, with a progress line per ~5 % of the images.

A re-run is cheap when nothing changed: the manifest holds a digest (``stamp``) of every image's
path, size and mtime, and a re-run that finds the same stamp (one stat per file, no reads) keeps
the manifest. Any difference — an image added, removed, rewritten or touched — reads everything
again; a stale manifest is removed first, so a failure never leaves a manifest of another tree.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import multiprocessing as mp
import os
import time
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Any

from mlbench.data.decode import JPEG_MAGIC, PNG_MAGIC, decode_rgb, decoder_names
from mlbench.data.imagenet import (
    FOLDER,
    FORMAT,
    GROUND_TRUTH,
    MANIFEST,
    META,
    OFFICIAL,
    SPLITS,
    ImageNetIndex,
    Progress,
    manifest_header,
    read_devkit,
    read_manifest,
    scan,
)
from mlbench.errors import DataError


def _kind(data: bytes) -> str:
    """What is unusual about a file: "" for an RGB JPEG (the rule), else "png", "gray",
    "cmyk"... (recorded so a device decoder can route the few it cannot decode)."""
    if data.startswith(PNG_MAGIC):
        return "png"
    if not data.startswith(JPEG_MAGIC):
        return "other"
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:  # the header only
            mode = img.mode
    except (OSError, ValueError, SyntaxError):  # decoded by simplejpeg, opaque to Pillow
        return "other"
    return {"RGB": "", "L": "gray", "CMYK": "cmyk"}.get(mode, mode.lower())


def _check(source: str, rels: list[str]) -> list[tuple[int, str, str]]:
    """(bytes, sha256, kind) of each file, after a full decode; a pool task."""
    out = []
    for rel in rels:
        path = f"{source}/{rel}"
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise DataError(f"cannot read image {path}: {exc.strerror or exc}") from None
        decode_rgb(data, name=path)  # DataError naming the file when no decoder reads it
        out.append((len(data), hashlib.sha256(data).hexdigest(), _kind(data)))
    return out


def _check_all(
    source: Path, rels: list[str], workers: int, say: Progress
) -> list[tuple[int, str, str]]:
    """:func:`_check` over every file, in ``workers`` spawned processes, a progress line per
    ~5 % of the files."""
    total = len(rels)
    chunk = max(1, min(256, math.ceil(total / (max(workers, 1) * 8))))
    chunks = [rels[i : i + chunk] for i in range(0, total, chunk)]
    every = max(1000, total // 20)
    t0 = time.monotonic()
    results: list[tuple[int, str, str]] = []
    next_line = every

    def report(done: int) -> None:
        rate = done / max(time.monotonic() - t0, 1e-9)
        say(f"hashed and decoded {done:,} / {total:,} images ({rate:,.0f} images/s)")

    def collect(parts: Iterable[list[tuple[int, str, str]]]) -> None:
        nonlocal next_line
        for part in parts:
            results.extend(part)
            if len(results) >= next_line and len(results) < total:
                report(len(results))
                next_line += every

    task = partial(_check, str(source))
    if workers <= 1 or len(chunks) < 2:
        collect(map(task, chunks))
    else:
        with mp.get_context("spawn").Pool(min(workers, len(chunks))) as pool:
            collect(pool.imap(task, chunks))
    report(total)
    return results


def _stamp(index: ImageNetIndex) -> str:
    """A digest of every image's path, size and mtime: equal stamps let a re-run of
    :func:`prepare` keep the manifest without reading 140 GB again."""
    h = hashlib.sha256()
    root = index.source
    for rel, _ in (*index.train, *index.val):
        try:
            st = os.stat(root / rel)
        except OSError as exc:
            raise DataError(f"cannot stat {root / rel}: {exc.strerror}") from None
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _write(path: Path, manifest: dict[str, Any]) -> None:
    """One key a line (``head`` shows the facts), compact lists (a fast load), the per-file
    columns last; written to a temporary name and renamed, so a reader never sees half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = [k for k in manifest if k not in SPLITS] + list(SPLITS)
    body = ",\n".join(
        f"{json.dumps(k)}:{json.dumps(manifest[k], separators=(',', ':'))}" for k in keys
    )
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("{\n" + body + "\n}\n", encoding="utf-8")
    os.replace(tmp, path)


def prepare(
    source: Path,
    out: Path,
    *,
    workers: int = 1,
    progress: Progress | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Check the tree in ``source`` and write ``out/imagenet/manifest.json``; returns the
    manifest's header (everything but the per-file columns).

    Every image is read, hashed (sha256) and fully decoded in ``workers`` processes; one that no
    decoder reads stops the preparation with a :class:`DataError` naming it, before anything is
    written. A previous manifest that no longer matches the tree is removed first (a folder is
    never left with a manifest of another tree). When the manifest is present and every image's
    path, size and mtime are as recorded, nothing is read again (``force`` re-reads anyway).
    """
    say = progress or (lambda _msg: None)
    t0 = time.monotonic()
    index = scan(source)
    classes, n_train, n_val = index.counts
    where = "val/nXXXXXXXX/ folders" if index.val_layout == "folders" else "flat val/ + devkit"
    say(
        f"scanned {index.source}: {classes:,} classes, {n_train:,} train and {n_val:,} val "
        f"images ({where}); {len(index.ignored):,} other files ignored"
    )
    stamp = _stamp(index)
    path = Path(out) / FOLDER / MANIFEST
    if path.is_file():
        try:
            old = read_manifest(path)
        except DataError:
            old = {}
        if not force and old.get("source") == str(index.source) and old.get("stamp") == stamp:
            say(f"{path} is up to date (no image changed since it was written)")
            return manifest_header(old)
        path.unlink()
    results = _check_all(index.source, [r for r, _ in (*index.train, *index.val)], workers, say)
    odd = {
        rel: kind
        for (rel, _), (_, _, kind) in zip((*index.train, *index.val), results, strict=True)
        if kind
    }
    reasons = []
    if index.counts != OFFICIAL:
        reasons.append(
            f"{classes:,} classes, {n_train:,} train and {n_val:,} val images (ILSVRC2012 has "
            f"{OFFICIAL[0]:,}, {OFFICIAL[1]:,} and {OFFICIAL[2]:,})"
        )
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "dataset": "imagenet",
        "source": str(index.source),
        "val_layout": index.val_layout,
        "counts": {"classes": classes, "train": n_train, "val": n_val},
        "official": not reasons,
        "nonofficial_reasons": reasons,
        "devkit": _devkit_record(index),
        "odd": odd,
        "ignored": {"count": len(index.ignored), "examples": list(index.ignored[:20])},
        "decoders": list(decoder_names()),
        "stamp": stamp,
        "seconds": round(time.monotonic() - t0, 1),
        "wnids": list(index.wnids),
    }
    offset = 0
    for split in SPLITS:
        pairs = index.train if split == "train" else index.val
        part = results[offset : offset + len(pairs)]
        offset += len(pairs)
        manifest[split] = {
            "paths": [r for r, _ in pairs],
            "labels": [label for _, label in pairs],
            "bytes": [b for b, _, _ in part],
            "sha256": [s for _, s, _ in part],
        }
    _write(path, manifest)
    say(f"wrote {path} ({time.monotonic() - t0:.1f} s)")
    return manifest_header(manifest)


def _devkit_record(index: ImageNetIndex) -> dict[str, Any] | None:
    """Where the val labels came from, with the sha256 of the two devkit files."""
    if index.val_layout != "flat":
        return None
    gt, meta, where = read_devkit(index.source)
    return {
        "from": where,
        GROUND_TRUTH: hashlib.sha256(gt).hexdigest(),
        META: hashlib.sha256(meta).hexdigest(),
    }
