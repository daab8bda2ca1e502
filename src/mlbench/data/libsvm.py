"""LIBSVM binary-classification files (epsilon, a9a, w8a, ...) via scikit-learn's svmlight loader.

Layout, as on the LIBSVM site: ``NAME`` (train) and ``NAME.t`` (test), optionally ``.bz2``; found
in ``ROOT`` or ``ROOT/libsvm``. epsilon is served as ``epsilon_normalized[.t].bz2``.

Datasets in :data:`REMOTE` can be fetched (:func:`fetch`, ``mlbench data fetch``) with pinned
sha256 sums, so the quick start works on a machine that has only the internet. Only sets whose
exact bytes we could check are listed: epsilon (12 GB) is not, so it keeps its manual hint.

The launcher runs :func:`check` on both files before any worker starts: every line as the workers'
loader will read it (a bad line is a one-line error naming the file and line, not a worker's
traceback), labels binary, and a feature count that cannot blow up the dense matrix each worker
builds — one stray index of 8,000 in a9a once meant 2.6 GB per worker.
"""

from __future__ import annotations

import bz2
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlbench.data.download import Progress, RemoteFile
from mlbench.data.download import fetch as fetch_file
from mlbench.errors import DataError

FILE_STEMS = {"epsilon": "epsilon_normalized"}
BASE_URL = "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/binary/"
URLS = {"epsilon": BASE_URL + "epsilon_normalized.bz2"}
#: Fetchable datasets: (train, test) files as the LIBSVM site serves them (plain text). The sha256
#: sums are of the real files (32,561 / 16,281 examples, 123 features), as in the SHA256SUMS /
#: README of the project's shared data folder (``libsvm/a9a[.t].bz2``, decompressed).
REMOTE: dict[str, tuple[RemoteFile, RemoteFile]] = {
    "a9a": (
        RemoteFile(
            "a9a",
            BASE_URL + "a9a",
            "f5d5ffd8d865ff41328e7ee043e4b020816914ff6843ff15b98905ddbedce906",
            2_329_875,
        ),
        RemoteFile(
            "a9a.t",
            BASE_URL + "a9a.t",
            "1f448a153f0320399a7e40836eb207655b0bde0f21fc941cc472193daa9f5de9",
            1_164_628,
        ),
    ),
}
#: The LIBSVM site's "# of features" of the binary sets we know: an index past it is a corrupt line,
#: not a wider dataset.
KNOWN_FEATURES: dict[str, int] = {
    "epsilon": 2000,
    **{f"a{i}a": 123 for i in range(1, 10)},
    **{f"w{i}a": 300 for i in range(1, 9)},
}
#: The largest dense matrix (train + test, float32) loaded for a dataset not in KNOWN_FEATURES:
#: every worker holds all of it, so a typo'd index must not silently cost gigabytes per worker.
DENSE_LIMIT_BYTES = 2 * 10**9
#: scikit-learn's reader keeps a feature index in a C int
_INDEX_MAX = 2**31 - 1
_BINARY_LABELS = (-1.0, 0.0, 1.0)
#: Environment variable naming a shared dataset folder (a lab mirror, the CI cache) that
#: ``mlbench data fetch`` copies from before going to the internet.
SHARED_ENV = "MLBENCH_SHARED_DATA"


def _candidates(root: Path, stem: str) -> list[Path]:
    return [d / (stem + ext) for d in (root, root / "libsvm") for ext in ("", ".bz2")]


def locate(root: Path, dataset: str) -> tuple[Path, Path]:
    """Train and test files of ``dataset`` under ``root``; a clear error names what is missing."""
    stem = FILE_STEMS.get(dataset, dataset)
    found = []
    for suffix in ("", ".t"):
        paths = [p for p in _candidates(root, stem + suffix) if p.is_file()]
        if not paths:
            if dataset in REMOTE:
                hint = f" (fetch it: mlbench data fetch {dataset} --data-dir {root})"
            elif dataset in URLS:
                hint = f" (download: {URLS[dataset]}{suffix and ' and .t.bz2'})"
            else:
                hint = ""
            raise DataError(
                f"LIBSVM file {stem + suffix}[.bz2] for dataset {dataset!r} not found in {root} "
                f"or {root / 'libsvm'}{hint}"
            )
        found.append(paths[0])
    return found[0], found[1]


def shared_dirs() -> list[Path]:
    """The shared dataset folder from ``$MLBENCH_SHARED_DATA``, if set (else none)."""
    value = os.environ.get(SHARED_ENV)
    return [Path(value).expanduser()] if value else []


def fetch(
    root: Path,
    dataset: str,
    *,
    shared: Iterable[Path] = (),
    progress: Progress | None = None,
) -> dict[str, str]:
    """Put ``dataset``'s verified files into ``root/libsvm``; returns {file name: how}.

    ``how`` is ``present`` (already there and matching), ``local`` (copied from a ``shared``
    folder: ``NAME``, ``NAME.bz2``, ``libsvm/NAME`` or ``libsvm/NAME.bz2``; no network) or
    ``downloaded``. ``progress(name, done, total)`` reports download bytes.
    """
    if dataset not in REMOTE:
        known = ", ".join(sorted(REMOTE))
        raise DataError(f"no download known for LIBSVM dataset {dataset!r} (fetchable: {known})")
    shared = list(shared)
    done: dict[str, str] = {}
    for spec in REMOTE[dataset]:
        copies = [
            d / sub / (spec.name + ext)
            for d in shared
            for sub in ("", "libsvm")
            for ext in ("", ".bz2")
        ]
        done[spec.name] = fetch_file(
            spec, root / "libsvm" / spec.name, local_copies=copies, progress=progress
        )
    return done


def ensure(root: Path, dataset: str, allow_download: bool) -> tuple[Path, Path]:
    """:func:`locate`, and when the files are absent and ``allow_download`` (``data.download``),
    download them first (:func:`fetch`, official URL, sha256-checked), as ``cifar10.ensure`` does.

    Meant for the launcher, once per run before workers start (they only :func:`locate`). It does
    not look at ``$MLBENCH_SHARED_DATA``: which folder a run reads is ``data.dir`` alone, so a run
    never picks up files from somewhere the user did not name (``mlbench data fetch`` does).
    """
    try:
        return locate(root, dataset)
    except DataError:
        if not allow_download or dataset not in REMOTE:
            raise
    fetch(root, dataset)
    return locate(root, dataset)


def load(path: Path, n_features: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Dense float32 features and {0,1} float32 labels; refuses non-binary label sets."""
    from sklearn.datasets import load_svmlight_file

    try:
        x, y = load_svmlight_file(str(path), n_features=n_features, dtype=np.float32)
    except (ValueError, OverflowError, OSError, EOFError) as exc:
        raise DataError(f"LIBSVM file {path} cannot be read: {exc}") from None
    labels = np.unique(y)
    if set(labels.tolist()) <= {-1.0, 1.0}:
        y = (y > 0).astype(np.float32)
    elif set(labels.tolist()) <= {0.0, 1.0}:
        y = y.astype(np.float32)
    else:
        raise DataError(f"LIBSVM file {path} is not binary (labels {labels[:5].tolist()} ...)")
    return np.asarray(x.todense(), dtype=np.float32), y


def load_pair(root: Path, dataset: str) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """(train, test) with the feature count taken from the larger of the two files."""
    train_path, test_path = locate(root, dataset)
    x_train, y_train = load(train_path)
    x_test, y_test = load(test_path)
    n_features = max(x_train.shape[1], x_test.shape[1])
    if x_train.shape[1] < n_features:
        x_train = np.pad(x_train, ((0, 0), (0, n_features - x_train.shape[1])))
    if x_test.shape[1] < n_features:
        x_test = np.pad(x_test, ((0, 0), (0, n_features - x_test.shape[1])))
    return (x_train, y_train), (x_test, y_test)


def count_rows(path: Path) -> int:
    """Number of examples, without parsing features (the launcher's cheap check)."""
    opener = __import__("bz2").open if path.suffix == ".bz2" else open
    try:
        with opener(path, "rb") as fh:
            return sum(1 for line in fh if line.strip() and not line.lstrip().startswith(b"#"))
    except (OSError, EOFError) as exc:
        raise DataError(f"LIBSVM file {path} cannot be read: {exc}") from None


# ---------------------------------------------------------------------------- the launcher's check


@dataclass(frozen=True)
class FileFacts:
    """What :func:`scan` learned about one file."""

    path: Path
    rows: int
    min_index: int  # smallest feature index as written; -1 when the file has none
    max_index: int  # largest one; -1 when none
    max_index_line: int  # the first line holding max_index; 0 when none

    @property
    def n_features(self) -> int:
        """Columns the loader gives this file: it is 1-based unless some index is 0 (or none)."""
        if self.max_index < 0:
            return 1
        return self.max_index if self.min_index > 0 else self.max_index + 1


def _show(token: bytes) -> str:
    text = token[:40].decode("utf-8", "backslashreplace")
    return repr(text + ("..." if len(token) > 40 else ""))


def _parse_line(line: bytes) -> tuple[float, int, int] | None:
    """(label, smallest index, largest index) of one line, None for a blank or comment line.

    Raises ValueError with the reason where the workers' loader would refuse the line. It mirrors
    scikit-learn's reader (``_svmlight_format_fast.pyx``) step by step rather than inventing a
    stricter grammar, so a file passes here exactly when it loads there: cut at ``#``, split on
    whitespace, ``float()`` the label, skip one ``qid...:...``, then ``idx:value`` pairs read with
    ``int()``/``float()``, indices ≥ 0, strictly increasing, within a C int. The loop only asks
    "is all of it fine?" (a pair without ':' has the value b'', which float() refuses; sorted
    from -1 means ≥ 0; the last index is the largest); :func:`_why_refused` says what is not.
    """
    if b"\0" in line:
        raise ValueError("NUL byte (binary data, not LIBSVM text)")
    hash_at = line.find(b"#")
    parts = (line[:hash_at] if hash_at >= 0 else line).split()
    if not parts:
        return None
    try:
        label = float(parts[0])
    except ValueError:
        raise ValueError(f"label {_show(parts[0])} is not a number") from None
    features = parts[1:]
    if features and features[0].startswith(b"qid"):
        if b":" not in features[0]:
            raise ValueError(f"{_show(features[0])} is not index:value")
        features = features[1:]
    prev = -1
    for token in features:
        index_text, _, value = token.partition(b":")
        try:
            index = int(index_text)
            float(value)
        except ValueError:
            raise ValueError(_why_refused(features)) from None
        if index <= prev:
            raise ValueError(_why_refused(features))
        prev = index
    if prev > _INDEX_MAX:
        raise ValueError(_why_refused(features))
    first = int(features[0].partition(b":")[0]) if features else -1
    return label, first, prev


def _why_refused(features: list[bytes]) -> str:
    """The first problem of a refused line's ``idx:value`` pairs, checked in the loader's order."""
    prev = -1
    for token in features:
        index_text, colon, value = token.partition(b":")
        if not colon:
            return f"{_show(token)} is not index:value"
        try:
            index = int(index_text)
        except ValueError:
            return f"index {_show(index_text)} is not an integer"
        if index < 0:
            return f"feature index {index} is negative"
        if index > _INDEX_MAX:
            return f"feature index {index} is too large (the loader's: {_INDEX_MAX})"
        if index <= prev:
            return f"feature indices are not sorted and unique ({prev} then {index})"
        try:
            float(value)
        except ValueError:
            return f"value {_show(value)} is not a number"
        prev = index
    raise AssertionError("_why_refused called on a line the loader accepts")  # pragma: no cover


class _Labels:
    """Binary labels, -1/+1 or 0/1 but not both (as :func:`load` requires), checked per line."""

    def __init__(self) -> None:
        self.first_line: dict[float, int] = {}

    def add(self, label: float, line: int) -> None:
        if label not in _BINARY_LABELS:
            raise ValueError(f"label {label:g} is not binary (a file uses -1/+1 or 0/1)")
        clash = {-1.0: 0.0, 0.0: -1.0}.get(label)
        if clash is not None and clash in self.first_line:
            raise ValueError(
                f"label {label:g} after label {clash:g} on line {self.first_line[clash]} "
                "(a binary file uses -1/+1 or 0/1)"
            )
        self.first_line.setdefault(label, line)


def scan(path: Path) -> FileFacts:
    """Read ``path`` once, line by line, as the workers will; a bad line raises
    :class:`DataError` naming ``path`` and the line number.

    Python-level: ~0.1 s for a9a's 32,561 lines (0.16 s with a9a.t). scikit-learn's reader is no
    faster per token and costs 0.9 s to import. On a .bz2 file (epsilon) it adds ~70 % to the
    decompression that counting the rows alone already cost.
    """
    opener = bz2.open if path.suffix == ".bz2" else open
    labels = _Labels()
    seen: set[float] = set()  # labels already checked: the per-line cost is one lookup
    rows, min_index, max_index, max_line, lineno = 0, -1, -1, 0, 0
    try:
        with opener(path, "rb") as fh:
            for lineno, line in enumerate(fh, 1):
                parsed = _parse_line(line)
                if parsed is None:
                    continue
                label, first, last = parsed
                if label not in seen:
                    labels.add(label, lineno)
                    seen.add(label)
                rows += 1
                if first >= 0 and (min_index < 0 or first < min_index):
                    min_index = first
                if last > max_index:
                    max_index, max_line = last, lineno
    except ValueError as exc:
        raise DataError(f"LIBSVM file {path}, line {lineno}: {exc}") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"LIBSVM file {path} cannot be read (after line {lineno}): {exc}") from None
    return FileFacts(path, rows, min_index, max_index, max_line)


def _size(n: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "bytes" else f"{int(n)} bytes"
        n /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def check(
    dataset: str, train: Path, test: Path, *, dense_limit: int = DENSE_LIMIT_BYTES
) -> tuple[FileFacts, FileFacts]:
    """:func:`scan` both files, then bound the feature count the workers' dense matrix gets:
    a dataset in :data:`KNOWN_FEATURES` may not go past its count (a content error, naming the
    line), any other may not need more than ``dense_limit`` bytes as dense float32 train + test.
    """
    facts = scan(train), scan(test)
    known = KNOWN_FEATURES.get(dataset)
    widest = max(facts, key=lambda f: f.n_features)
    if known is not None:
        for f in facts:
            if f.n_features > known:
                raise DataError(
                    f"LIBSVM file {f.path}, line {f.max_index_line}: feature index "
                    f"{f.max_index}, but {dataset} has {known} features"
                )
        return facts
    rows = sum(f.rows for f in facts)
    need = rows * widest.n_features * 4
    if need > dense_limit:
        raise DataError(
            f"LIBSVM dataset {dataset!r} would take {_size(need)} per worker as a dense matrix "
            f"({rows} rows × {widest.n_features} features × 4 bytes), above the "
            f"{_size(dense_limit)} allowed for a dataset mlbench does not know; its largest "
            f"feature index {widest.max_index} is in {widest.path}, line {widest.max_index_line}"
        )
    return facts
