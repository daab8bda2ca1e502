"""LIBSVM binary-classification files (epsilon, a9a, w8a, ...) via scikit-learn's svmlight loader.

Layout, as on the LIBSVM site: ``NAME`` (train) and ``NAME.t`` (test), optionally ``.bz2``; found
in ``ROOT`` or ``ROOT/libsvm``. epsilon is served as ``epsilon_normalized[.t].bz2``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mlbench.errors import DataError

FILE_STEMS = {"epsilon": "epsilon_normalized"}
URLS = {
    "epsilon": "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/binary/epsilon_normalized.bz2"
}


def _candidates(root: Path, stem: str) -> list[Path]:
    return [d / (stem + ext) for d in (root, root / "libsvm") for ext in ("", ".bz2")]


def locate(root: Path, dataset: str) -> tuple[Path, Path]:
    """Train and test files of ``dataset`` under ``root``; a clear error names what is missing."""
    stem = FILE_STEMS.get(dataset, dataset)
    found = []
    for suffix in ("", ".t"):
        paths = [p for p in _candidates(root, stem + suffix) if p.is_file()]
        if not paths:
            hint = (
                f" (download: {URLS[dataset]}{suffix and ' and .t.bz2'})" if dataset in URLS else ""
            )
            raise DataError(
                f"LIBSVM file {stem + suffix}[.bz2] for dataset {dataset!r} not found in {root} "
                f"or {root / 'libsvm'}{hint}"
            )
        found.append(paths[0])
    return found[0], found[1]


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
