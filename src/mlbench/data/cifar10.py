"""CIFAR-10 in its official "python version" layout (``cifar-10-batches-py``).

We read the pickles ourselves (no torchvision dependency) through a restricted unpickler that only
admits the numpy classes the official files use — a downloaded pickle must not be able to run code.
Integrity: the downloaded tarball is checked against the official md5; an extracted directory is
checked structurally (shapes, dtype, label range, counts), because re-created copies of the pickles
can hold identical pixels and labels with different ``filenames`` entries and hence other md5s.
"""

from __future__ import annotations

import pickle
import tarfile
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from mlbench.errors import DataError

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
TARBALL_MD5 = "c58f30108f718f92721af3b95e74349a"
DIRNAME = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
OFFICIAL_SIZES = (50000, 10000)
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2023, 0.1994, 0.2010)


class _Dtype:
    """Stands in for ``numpy.dtype`` while unpickling: records its arguments, runs no numpy code.

    Letting the real ``numpy.dtype.__setstate__`` see crafted bytes can crash the interpreter, so
    the pickle only builds these inert records and :func:`_to_array` validates them.
    """

    def __init__(self, name: Any = None, *args: Any) -> None:
        self.name = name

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _Array:
    """Stands in for ``numpy.ndarray`` (and ``_reconstruct``) while unpickling."""

    state: Any = None

    def __init__(self, *args: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _Array,
    ("numpy._core.multiarray", "_reconstruct"): _Array,
    ("numpy", "ndarray"): _Array,
    ("numpy", "dtype"): _Dtype,
}


class _ForbiddenClass(pickle.UnpicklingError):
    pass


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise _ForbiddenClass(
                f"forbidden class {module}.{name} in a CIFAR-10 pickle (only numpy arrays)"
            )
        return _ALLOWED[(module, name)]


def _to_array(value: Any, path: Path) -> np.ndarray:
    """Build a uint8 array from an unpickled :class:`_Array` record, checking every field."""
    state = value.state
    if not (isinstance(state, tuple) and len(state) == 5):
        raise DataError(f"CIFAR-10 file {path}: 'data' is not a pickled numpy array")
    _, shape, dtype, _fortran, raw = state
    if not isinstance(dtype, _Dtype) or dtype.name not in ("u1", b"u1", "uint8"):
        raise DataError(f"CIFAR-10 file {path}: 'data' is not a uint8 array")
    if not (isinstance(shape, tuple) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise DataError(f"CIFAR-10 file {path}: 'data' has an invalid shape")
    if isinstance(raw, str):
        raw = raw.encode("latin1")  # a Python 2 str read with encoding="latin1"
    if not isinstance(raw, bytes | bytearray) or len(raw) != int(np.prod(shape)):
        raise DataError(f"CIFAR-10 file {path}: 'data' holds the wrong number of bytes")
    return np.frombuffer(raw, dtype=np.uint8).reshape(shape)


def _unpickle(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            obj = _SafeUnpickler(fh, encoding="latin1").load()
    except FileNotFoundError:
        raise DataError(f"CIFAR-10 file missing: {path}") from None
    except _ForbiddenClass as exc:
        raise DataError(f"CIFAR-10 file {path} is not a valid CIFAR-10 pickle ({exc})") from None
    except (Exception, MemoryError) as exc:  # any decoding failure of untrusted bytes
        raise DataError(
            f"CIFAR-10 file {path} is corrupt or truncated ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(obj, dict):
        raise DataError(f"CIFAR-10 file {path} does not hold a batch dict")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}
    for key, value in batch.items():
        if isinstance(value, _Array):
            batch[key] = _to_array(value, path)
    return batch


def find(root: Path) -> Path | None:
    """The ``cifar-10-batches-py`` directory under ``root`` (either directly or in ``cifar10/``)."""
    for cand in (root / DIRNAME, root / "cifar10" / DIRNAME, root):
        if cand.name == DIRNAME and cand.is_dir():
            return cand
    return None


def load_split(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images as uint8 ``[N, 3, 32, 32]`` and labels as int64 ``[N]``; validated.

    The official files hold 10,000 rows each; smaller files in the same format are accepted (tests,
    subsets) and reported by :func:`sizes` so a run on them is marked non-official.
    """
    files = TRAIN_FILES if split == "train" else TEST_FILES
    xs, ys = [], []
    for name in files:
        path = directory / name
        batch = _unpickle(path)
        data, labels = batch.get("data"), batch.get("labels")
        if (
            not isinstance(data, np.ndarray)
            or data.dtype != np.uint8
            or data.ndim != 2
            or (data.shape[1] != 3072)
        ):
            shape = getattr(data, "shape", None)
            raise DataError(
                f"CIFAR-10 file {path}: 'data' is not a uint8 [N, 3072] array ({shape})"
            )
        try:
            y = np.asarray(labels, dtype=np.int64)
        except (TypeError, ValueError):
            y = np.empty(0, np.int64)
        if y.shape != (len(data),) or len(y) == 0 or y.min() < 0 or y.max() > 9:
            raise DataError(f"CIFAR-10 file {path}: 'labels' must be {len(data)} values in 0..9")
        xs.append(data.reshape(len(data), 3, 32, 32))
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def verify(directory: Path) -> tuple[int, int]:
    """Full structural check of every file; returns (train, test) sizes. Raises DataError."""
    sizes = []
    for split in ("train", "test"):
        _, y = load_split(directory, split)
        sizes.append(len(y))
    return sizes[0], sizes[1]


def _md5(path: Path) -> str:
    from mlbench.data.download import file_hash

    return file_hash(path, "md5")


def download(root: Path, url: str = URL, md5: str = TARBALL_MD5) -> Path:
    """Fetch the official tarball into ``root/cifar10``, check its md5, extract it."""
    target = root / "cifar10"
    target.mkdir(parents=True, exist_ok=True)
    tarball = target / "cifar-10-python.tar.gz"
    partial = tarball.with_suffix(".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(partial, "wb") as out:
            while chunk := resp.read(1 << 20):
                out.write(chunk)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise DataError(
            f"CIFAR-10 not found under {root} and download from {url} failed ({exc}); "
            f"put {DIRNAME}/ there (official python version)"
        ) from None
    got = _md5(partial)
    if got != md5:
        partial.unlink(missing_ok=True)
        raise DataError(f"downloaded CIFAR-10 tarball has md5 {got}, expected {md5}; not using it")
    partial.replace(tarball)
    with tarfile.open(tarball) as tar:
        tar.extractall(target, filter="data")
    return target / DIRNAME


def ensure(root: Path, allow_download: bool) -> tuple[Path, tuple[int, int]]:
    """Locate (or download) and verify CIFAR-10 under ``root``; returns the directory and sizes."""
    directory = find(root)
    if directory is None:
        if not allow_download:
            raise DataError(
                f"CIFAR-10 not found under {root} (expected {DIRNAME}/ or cifar10/{DIRNAME}/); "
                "set data.download=true or put the official python-version files there"
            )
        directory = download(root)
    return directory, verify(directory)
