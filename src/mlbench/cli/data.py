"""``mlbench data list|fetch|prepare``: get the real datasets a task needs, checked by sha256.

Exists so a newcomer's first benchmark (``make run``: task 2a on a9a) works on a machine that has
only the internet: ``fetch`` copies a verified file from a shared dataset folder when there is one
(``--shared`` or ``$MLBENCH_SHARED_DATA``), and otherwise downloads it from the dataset's official
home and checks it against the pinned sha256. Running it again is cheap and makes no request when
the files are already there and intact.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

EPILOG = """Files go to DIR/libsvm/NAME and DIR/libsvm/NAME.t, the layout that
`mlbench run --data-dir DIR` reads. Order: files already in DIR that match their
sha256 are kept; else a copy from the shared folder (NAME, NAME.bz2, libsvm/NAME or
libsvm/NAME.bz2; no network); else a download from the official URL. A download
goes to a temporary file and is renamed into place only after its sha256 matched,
so a failed or corrupt download leaves nothing behind.

examples:
  mlbench data list
  mlbench data fetch a9a --data-dir .data
  mlbench run epsilon-logreg --workers 2 --goal light --set data.dataset=a9a --data-dir .data
"""

PREPARE_EPILOG = """Where the official files come from (download and extract them into --source):

  wmt16   statmt.org WMT16 EN-DE training corpora (MLPerf GNMT's list):
            http://www.statmt.org/europarl/v7/de-en.tgz          europarl-v7.de-en.{en,de}
            http://www.statmt.org/wmt13/training-parallel-commoncrawl.tgz
                                                                 commoncrawl.de-en.{en,de}
            http://data.statmt.org/wmt16/translation-task/training-parallel-nc-v11.tgz
                                                                 news-commentary-v11.de-en.{en,de}
  wmt17   the same, with News Commentary v12:
            http://data.statmt.org/wmt17/translation-task/training-parallel-nc-v12.tgz
                                                                 news-commentary-v12.de-en.{en,de}
  both    the test set, raw text, 3003 lines each (pinned by sha256):
            sacrebleu -t wmt14/full -l en-de --echo src > newstest2014.en
            sacrebleu -t wmt14/full -l en-de --echo ref > newstest2014.de
  wikitext2  wiki.{train,valid,test}.tokens of wikitext-2-v1 (checked against pinned sha256)
  imagenet   ILSVRC2012 from https://image-net.org (an account; Download > ILSVRC 2012):
            ILSVRC2012_img_train.tar (138 GiB, one nXXXXXXXX.tar per class inside),
            ILSVRC2012_img_val.tar (6.3 GiB, 50,000 flat images), ILSVRC2012_devkit_t12.tar.gz
            (the val labels). Extract into --source:
              mkdir -p SRC/train SRC/val && tar -xf ILSVRC2012_img_val.tar -C SRC/val
              tar -xf ILSVRC2012_img_train.tar -C SRC/train && cd SRC/train
              for t in n*.tar; do
                mkdir "${t%.tar}" && tar -xf "$t" -C "${t%.tar}" && rm "$t"
              done
              cp ILSVRC2012_devkit_t12.tar.gz SRC/    (or extract it there)
            val/ re-laid out as val/nXXXXXXXX/ folders is read too (no devkit needed).

Corpus files are found in --source or anywhere below it (as the tarballs extract
them); .gz copies are read too. Nothing is downloaded: the corpora are large tarballs.

What is written (OUT/wmt16 or OUT/wmt17): train.npz and test.npz (token ids), vocab.txt
and bpe.codes (wmt16) or spm.model (wmt17), the raw newstest2014.{en,de}, and
manifest.json with the sha256 of every input and output. wmt16 follows MLPerf's GNMT
recipe (Moses tokenisation, clean-corpus 1-80, latin-1 filter, joint BPE, vocabulary
padded to a multiple of 8); wmt17 trains a shared sentencepiece model (a recorded
deviation from the original's subtokenizer). wikitext2 goes to OUT/wikitext2/wikitext-2.
imagenet writes only OUT/imagenet/manifest.json (the images stay in --source, which
must stay where it is): every image's label, size and sha256, after each was decoded.
A second run with no image changed keeps the manifest (--force re-reads everything).
A line per stage with counts goes to stderr. A corrupt, truncated or misaligned input
file, or an image no decoder reads, stops with a one-line error before anything is written.

examples:
  mlbench data prepare wmt16 --source ~/wmt16 --out .data
  mlbench data prepare wmt17 --source ~/wmt17 --out .data --workers 16
  mlbench data prepare wmt16 --source .data/wmt --out /tmp/d --train multi30k/train --merges 2000
  mlbench data prepare wikitext2 --source ~/Downloads/wikitext-2 --out .data
  mlbench data prepare imagenet --source /data/ILSVRC2012 --out .data --workers 16
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data",
        help="list and fetch real datasets (sha256-checked)",
        description="List and fetch the real datasets tasks train on.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="datasets `fetch` can get: files, URLs, sha256")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=run_list)
    fetch = actions.add_parser(
        "fetch",
        help="fetch a dataset into DIR (shared copy first, else download), checking sha256",
        description="Fetch a dataset's files into DIR/libsvm, each checked against its sha256.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fetch.add_argument("dataset", metavar="DATASET", help="dataset name (see `mlbench data list`)")
    fetch.add_argument(
        "--data-dir", required=True, type=Path, metavar="DIR", help="dataset root to write into"
    )
    fetch.add_argument(
        "--shared",
        type=Path,
        metavar="DIR",
        action="append",
        help="a shared dataset folder to copy from instead of downloading (repeatable; "
        "default $MLBENCH_SHARED_DATA)",
    )
    fetch.add_argument("--json", action="store_true", help="print {file: how} as JSON")
    fetch.set_defaults(func=run_fetch)
    prep = actions.add_parser(
        "prepare",
        help="turn downloaded WMT16/WMT17/WikiText-2/ImageNet files into the layout tasks read",
        description="Prepare a dataset from the official files you downloaded (see below): "
        "tokenise, learn the subword vocabulary, store ids, and record sha256 checksums of every "
        "input and output in a manifest that is verified whenever the data is loaded. For "
        "ImageNet: check the tree, decode every image and record a manifest of labels and "
        "checksums.",
        epilog=PREPARE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    prep.add_argument(
        "dataset",
        choices=("wmt16", "wmt17", "wikitext2", "imagenet"),
        metavar="DATASET",
        help="wmt16 (task wmt16-gnmt), wmt17 (wmt17-transformer), wikitext2 or imagenet "
        "(imagenet-resnet50)",
    )
    prep.add_argument(
        "--source",
        required=True,
        type=Path,
        metavar="DIR",
        help="folder holding the downloaded (extracted) official files",
    )
    prep.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="DIR",
        help="dataset root to write into (what `mlbench run --data-dir` reads)",
    )
    prep.add_argument(
        "--train",
        action="append",
        metavar="PREFIX",
        help="training pair files PREFIX.en/PREFIX.de (or .gz), relative to "
        "--source; repeatable. Default: the official corpora. Anything else is "
        "recorded as a non-official corpus",
    )
    prep.add_argument(
        "--merges",
        type=int,
        default=32_000,
        metavar="N",
        help="wmt16: BPE merge operations (default 32000, the recipe's)",
    )
    prep.add_argument(
        "--vocab-size",
        type=int,
        default=32_000,
        metavar="N",
        help="wmt17: sentencepiece vocabulary size (default 32000)",
    )
    prep.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        metavar="N",
        help="processes for tokenising and BPE, or for hashing and decoding images "
        "(default: all CPUs)",
    )
    prep.add_argument(
        "--force",
        action="store_true",
        help="imagenet: read every image again even when the manifest matches the tree",
    )
    prep.add_argument("--json", action="store_true", help="print the manifest as JSON")
    prep.set_defaults(func=run_prepare)


def run_list(args: argparse.Namespace) -> int:
    from mlbench.data import libsvm

    rows = [
        {"dataset": name, "file": f.name, "url": f.url, "bytes": f.size, "sha256": f.sha256}
        for name, files in sorted(libsvm.REMOTE.items())
        for f in files
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:  # one plain line per file: never truncated, grep- and cut-friendly
        print(f"{r['dataset']}\t{r['file']}\t{r['bytes']}\t{r['sha256']}\t{r['url']}")
    return 0


class _Reporter:
    """Download progress on stderr: a live bar on a terminal, else a line every few seconds."""

    def __init__(self) -> None:
        self.interactive = sys.stderr.isatty()
        self.current: str | None = None
        self.last = 0.0

    def __call__(self, name: str, done: int, total: int) -> None:
        now = time.monotonic()
        first = name != self.current
        if first:
            self.current, self.last = name, now
        if self.interactive:
            pct = 100 * done / total if total else 0.0
            end = "\n" if done >= total else ""
            print(
                f"\r{name}: {done / 1e6:.1f} / {total / 1e6:.1f} MB ({pct:3.0f} %)",
                end=end,
                file=sys.stderr,
                flush=True,
            )
        elif first or now - self.last >= 5 or done >= total:
            self.last = now
            print(f"{name}: {done / 1e6:.1f} / {total / 1e6:.1f} MB", file=sys.stderr, flush=True)


def run_fetch(args: argparse.Namespace) -> int:
    from mlbench.data import libsvm

    shared = args.shared if args.shared is not None else libsvm.shared_dirs()
    how = libsvm.fetch(args.data_dir, args.dataset, shared=shared, progress=_Reporter())
    if args.json:
        print(json.dumps(how))
        return 0
    words = {
        "present": "already present",
        "local": "copied from the shared folder",
        "downloaded": "downloaded",
    }
    for name, h in how.items():
        print(f"{args.data_dir / 'libsvm' / name}: {words[h]}, sha256 ok")
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if args.dataset == "wikitext2":
        from mlbench.data import wikitext2

        folder = wikitext2.prepare(args.source, args.out)
        if args.json:
            print(json.dumps({"dataset": "wikitext2", "directory": str(folder)}))
        else:
            print(f"{folder}: WikiText-2, sha256 ok")
        return 0
    if args.dataset == "imagenet":
        return _prepare_imagenet(args, say)
    from mlbench.data import wmt, wmt_prepare

    folder = wmt_prepare.prepare(
        args.dataset,
        args.source,
        args.out,
        train=args.train,
        merges=args.merges,
        vocab_size=args.vocab_size,
        workers=args.workers,
        progress=say,
    )
    manifest = wmt.check(folder)
    counts = manifest["counts"]
    return _report(
        args,
        manifest,
        f"{folder}: {counts['train_pairs']:,} training pairs, {counts['test']:,} test sentences, "
        f"vocabulary {manifest['vocab_size']:,}",
    )


def _report(args: argparse.Namespace, manifest: dict[str, Any], line: str) -> int:
    """A prepared dataset's manifest as JSON (``--json``), or ``line`` and whether the set is
    official, with the reasons when not."""
    if args.json:
        print(json.dumps(manifest, indent=2))
        return 0
    kind = (
        "official"
        if manifest["official"]
        else "NOT official: " + "; ".join(manifest["nonofficial_reasons"])
    )
    print(f"{line} ({kind})")
    return 0


def _prepare_imagenet(args: argparse.Namespace, say: Callable[[str], None]) -> int:
    from mlbench.data import imagenet

    manifest = imagenet.prepare(
        args.source, args.out, workers=args.workers, progress=say, force=args.force
    )
    counts = manifest["counts"]
    return _report(
        args,
        manifest,
        f"{args.out / imagenet.FOLDER / imagenet.MANIFEST}: {counts['classes']:,} classes, "
        f"{counts['train']:,} train and {counts['val']:,} val images, {len(manifest['odd']):,} "
        f"odd files (PNG, CMYK, grayscale), {manifest['ignored']['count']:,} other files ignored",
    )
