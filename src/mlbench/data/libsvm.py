"""LIBSVM binary-classification files (epsilon, a9a, w8a, ...) via scikit-learn's svmlight loader.

Layout, as on the LIBSVM site: ``NAME`` (train) and ``NAME.t`` (test), optionally ``.bz2``; found
in ``ROOT`` or ``ROOT/libsvm``. epsilon is served as ``epsilon_normalized[.t].bz2``.

Datasets in :data:`REMOTE` can be fetched (:func:`fetch`, ``mlbench data fetch``) with pinned
sha256 sums, so the quick start works on a machine that has only the internet. Only sets whose
exact bytes we could check are listed: epsilon (12 GB) is not, so it keeps its manual hint.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
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
    except (ValueError, OSError, EOFError) as exc:
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
