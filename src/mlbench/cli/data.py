"""``mlbench data list|fetch``: get the real datasets a task needs, checked by sha256.

Exists so a newcomer's first benchmark (``make run``: task 2a on a9a) works on a machine that has
only the internet: ``fetch`` copies a verified file from a shared dataset folder when there is one
(``--shared`` or ``$MLBENCH_SHARED_DATA``), and otherwise downloads it from the dataset's official
home and checks it against the pinned sha256. Running it again is cheap and makes no request when
the files are already there and intact.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

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
