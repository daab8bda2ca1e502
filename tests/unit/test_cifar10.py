"""mlbench.data.cifar10: the official python-version pickles, download + md5, validation."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from mlbench.data import cifar10
from mlbench.errors import DataError

TRAIN_SIZES = (2, 3, 1, 2, 2)  # rows in data_batch_1..5
TEST_SIZE = 4


# ---------------------------------------------------------------------------- tiny writers


def _flatten(images: np.ndarray) -> np.ndarray:
    """[N,3,32,32] -> [N,3072] by the documented layout, written index by index (no reshape)."""
    n = len(images)
    flat = np.zeros((n, 3072), np.uint8)
    c, h, w = np.indices((3, 32, 32)).reshape(3, -1)
    flat[:, c * 1024 + h * 32 + w] = images[:, c, h, w]
    return flat


def _py3_batch(labels, data, *, protocol: int = 4, bytes_keys: bool = False) -> bytes:
    d = {
        "batch_label": "training batch",
        "labels": list(map(int, labels)),
        "data": data,
        "filenames": [f"img_{i}.png" for i in range(len(labels))],
    }
    if bytes_keys:
        d = {k.encode(): v for k, v in d.items()}
    return pickle.dumps(d, protocol=protocol)


# The official files were written by Python 2 numpy (protocol 2, py2 `str` opcodes, numpy's
# `_reconstruct` + `__setstate__` with the raw bytes as a py2 str). A minimal writer of that layout:


def _py2_str(b: bytes) -> bytes:
    return (b"U" + bytes([len(b)]) if len(b) < 256 else b"T" + struct.pack("<I", len(b))) + b


def _py2_int(v: int) -> bytes:
    if 0 <= v < 256:
        return b"K" + bytes([v])
    if v < 65536:
        return b"M" + struct.pack("<H", v)
    return b"J" + struct.pack("<i", v)


def _py2_uint8_array(arr: np.ndarray) -> bytes:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    reconstruct = (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85"
        + _py2_str(b"b")
        + b"\x87R"
    )
    shape = b"(" + b"".join(_py2_int(d) for d in arr.shape) + b"t"
    dtype = (
        b"cnumpy\ndtype\n"
        + _py2_str(b"u1")
        + b"K\x00K\x01\x87R(K\x03"
        + _py2_str(b"|")
        + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    )
    return reconstruct + b"(K\x01" + shape + dtype + b"\x89" + _py2_str(arr.tobytes()) + b"tb"


def _py2_batch(labels, data, label: str = "training batch 1 of 5") -> bytes:
    out = b"\x80\x02}(" + _py2_str(b"batch_label") + _py2_str(label.encode())
    out += _py2_str(b"labels") + b"](" + b"".join(_py2_int(int(v)) for v in labels) + b"e"
    out += _py2_str(b"data") + _py2_uint8_array(data)
    names = [f"img_{i}.png".encode() for i in range(len(labels))]
    out += _py2_str(b"filenames") + b"](" + b"".join(_py2_str(f) for f in names) + b"e"
    return out + b"u."


def _make_split(rng, n):
    images = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n)
    return images, labels


def _write_dataset(directory: Path, *, style: str = "py2", seed: int = 0):
    """Write data_batch_1..5 and test_batch; returns (train_images, train_labels, test...)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = {}
    for split, names, sizes in (
        ("train", cifar10.TRAIN_FILES, TRAIN_SIZES),
        ("test", cifar10.TEST_FILES, (TEST_SIZE,)),
    ):
        xs, ys = [], []
        for name, n in zip(names, sizes, strict=True):
            images, labels = _make_split(rng, n)
            flat = _flatten(images)
            blob = _py2_batch(labels, flat) if style == "py2" else _py3_batch(labels, flat)
            (directory / name).write_bytes(blob)
            xs.append(images)
            ys.append(labels)
        out[split] = (np.concatenate(xs), np.concatenate(ys))
    return out


@pytest.fixture
def cifar_dir(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    expected = _write_dataset(d)
    return d, expected


# ---------------------------------------------------------------------------- layout


@pytest.mark.parametrize("style", ["py2", "py3"])
def test_load_split_round_trips_pixels_and_labels(tmp_path, style):
    d = tmp_path / cifar10.DIRNAME
    expected = _write_dataset(d, style=style, seed=1)
    for split in ("train", "test"):
        x, y = cifar10.load_split(d, split)
        ex, ey = expected[split]
        assert x.dtype == np.uint8 and x.shape == (len(ex), 3, 32, 32)
        assert y.dtype == np.int64
        np.testing.assert_array_equal(x, ex)
        np.testing.assert_array_equal(y, ey)
    assert len(cifar10.load_split(d, "train")[1]) == sum(TRAIN_SIZES)


def test_single_pixel_lands_at_channel_row_column(tmp_path):
    d = tmp_path / cifar10.DIRNAME
    d.mkdir()
    # row r of each file lights exactly one pixel (c, h, w) with value 200
    spots = [(0, 0, 0), (1, 2, 3), (2, 31, 30), (0, 5, 31), (2, 0, 17)]
    for name in (*cifar10.TRAIN_FILES, *cifar10.TEST_FILES):
        data = np.zeros((len(spots), 3072), np.uint8)
        for row, (c, h, w) in enumerate(spots):
            data[row, c * 1024 + h * 32 + w] = 200
        (d / name).write_bytes(_py2_batch([1] * len(spots), data))
    x, _ = cifar10.load_split(d, "test")
    for row, (c, h, w) in enumerate(spots):
        assert x[row, c, h, w] == 200
        assert int(x[row].sum()) == 200  # and nowhere else


def test_bytes_keys_are_accepted(tmp_path):
    # a pickle re-saved after loading with encoding="bytes" has bytes keys
    d = tmp_path / cifar10.DIRNAME
    d.mkdir()
    rng = np.random.default_rng(3)
    images, labels = _make_split(rng, 3)
    for name in (*cifar10.TRAIN_FILES, *cifar10.TEST_FILES):
        (d / name).write_bytes(_py3_batch(labels, _flatten(images), bytes_keys=True))
    x, y = cifar10.load_split(d, "test")
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)


def test_verify_returns_sizes(cifar_dir):
    d, _ = cifar_dir
    assert cifar10.verify(d) == (sum(TRAIN_SIZES), TEST_SIZE)


# ---------------------------------------------------------------------------- refusing bad files


@pytest.mark.parametrize("keep", [0, 2, 40, 100, 0.5, -1])
def test_truncated_pickle_is_data_error(cifar_dir, keep):
    d, _ = cifar_dir
    path = d / "data_batch_3"
    blob = path.read_bytes()
    cut = (
        int(len(blob) * keep) if isinstance(keep, float) else (keep if keep >= 0 else len(blob) - 1)
    )
    path.write_bytes(blob[:cut])
    with pytest.raises(DataError, match="data_batch_3"):
        cifar10.load_split(d, "train")
    cifar10.load_split(d, "test")  # other files unaffected


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalExploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("exploit", [_Exploit, _EvalExploit])
@pytest.mark.parametrize("protocol", [2, 4])
def test_pickle_with_forbidden_class_is_refused_and_not_executed(
    cifar_dir, tmp_path, exploit, protocol
):
    d, _ = cifar_dir
    marker = tmp_path / "pwned"
    evil = {"batch_label": "x", "labels": [0], "data": exploit(marker), "filenames": ["a"]}
    (d / "test_batch").write_bytes(pickle.dumps(evil, protocol=protocol))
    with pytest.raises(DataError, match="forbidden class"):
        cifar10.load_split(d, "test")
    assert not marker.exists()


def test_exploit_control_runs_under_plain_pickle(tmp_path):
    # control: the payload used above really executes when unpickled without restrictions
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps({"data": _EvalExploit(marker)}))
    assert marker.exists()


def test_missing_file_is_data_error_naming_the_path(cifar_dir):
    d, _ = cifar_dir
    (d / "data_batch_4").unlink()
    with pytest.raises(DataError) as exc:
        cifar10.load_split(d, "train")
    assert str(d / "data_batch_4") in str(exc.value)
    with pytest.raises(DataError, match="data_batch_4"):
        cifar10.verify(d)


def _replace_test_batch(d: Path, payload) -> None:
    (d / "test_batch").write_bytes(pickle.dumps(payload, protocol=4))


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"labels": [1, 2], "data": np.zeros((2, 3071), np.uint8)}, "'data'"),
        ({"labels": [1, 2], "data": np.zeros((2, 3072), np.int64)}, "'data'"),
        ({"labels": [1, 2], "data": np.zeros((2, 3, 32, 32), np.uint8)}, "'data'"),
        ({"labels": [1, 2], "data": [[0] * 3072] * 2}, "'data'"),
        ({"labels": [1, 2]}, "'data'"),
        ({"labels": [1, 10], "data": np.zeros((2, 3072), np.uint8)}, "'labels'"),
        ({"labels": [1, -1], "data": np.zeros((2, 3072), np.uint8)}, "'labels'"),
        ({"labels": [1], "data": np.zeros((2, 3072), np.uint8)}, "'labels'"),
        ({"labels": [1, 2, 3], "data": np.zeros((2, 3072), np.uint8)}, "'labels'"),
        ({"data": np.zeros((2, 3072), np.uint8)}, "'labels'"),
        ({"labels": ["a", "b"], "data": np.zeros((2, 3072), np.uint8)}, "'labels'"),
        ({"labels": [], "data": np.zeros((0, 3072), np.uint8)}, "'labels'"),
        ([1, 2, 3], "batch dict"),
    ],
)
def test_structurally_wrong_batch_is_data_error(cifar_dir, payload, fragment):
    d, _ = cifar_dir
    _replace_test_batch(d, payload)
    with pytest.raises(DataError, match=fragment) as exc:
        cifar10.verify(d)
    assert "test_batch" in str(exc.value)


def _corrupt_typecode(blob: bytes) -> bytes:
    # the single byte naming _reconstruct's typecode ("b") flipped to ","
    marker = b"ndarray\nK\x00\x85U\x01b"
    i = blob.index(marker) + len(marker) - 1
    return blob[:i] + b"," + blob[i + 1 :]


def test_reconstruct_typecode_is_irrelevant(cifar_dir):
    # the loader rebuilds arrays from the pickled state only, so _reconstruct's typecode argument
    # cannot change (or crash) anything: the pixels load unchanged
    d, _ = cifar_dir
    path = d / "test_batch"
    before = cifar10.load_split(d, "test")
    path.write_bytes(_corrupt_typecode(path.read_bytes()))
    after = cifar10.load_split(d, "test")
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1])


def _corrupt_data_length(blob: bytes) -> bytes:
    # the length field of the raw pixel string grows by 13 bytes: it swallows the next opcodes
    i = blob.index(b"\x89T") + 2
    n = struct.unpack("<I", blob[i : i + 4])[0]
    return blob[:i] + struct.pack("<I", n + 13) + blob[i + 4 :]


def _huge_unicode(blob: bytes) -> bytes:
    # a BINUNICODE8 opcode whose length field is corrupt
    return b"\x80\x04\x8d" + struct.pack("<Q", 2**63 + 5)


@pytest.mark.parametrize("corrupt", [_corrupt_data_length, _huge_unicode])
def test_corrupt_bytes_are_data_error(cifar_dir, corrupt):
    d, _ = cifar_dir
    path = d / "test_batch"
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(DataError):
        cifar10.load_split(d, "test")


_CHILD = """
import sys
from pathlib import Path
from mlbench.data import cifar10
from mlbench.errors import DataError
try:
    cifar10.load_split(Path(sys.argv[1]), "test")
except DataError:
    print("DataError")
"""


def test_crafted_dtype_state_does_not_crash_the_process(cifar_dir):
    d, _ = cifar_dir
    # np.dtype("u1") with a malformed 6-item state tuple, the 3rd item a (None, None) pair
    blob = (
        b"\x80\x02cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R(K\x03U\x01|NN\x86"
        b"J\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb."
    )
    (d / "test_batch").write_bytes(blob)
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", _CHILD, str(d)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"child died with {proc.returncode}"
    assert proc.stdout.strip() == "DataError"


# ---------------------------------------------------------------------------- find / ensure


def test_find_locations(tmp_path):
    assert cifar10.find(tmp_path) is None
    nested = tmp_path / "cifar10" / cifar10.DIRNAME
    nested.mkdir(parents=True)
    assert cifar10.find(tmp_path) == nested
    direct = tmp_path / cifar10.DIRNAME
    direct.mkdir()
    assert cifar10.find(tmp_path) == direct  # the direct location wins
    assert cifar10.find(direct) == direct  # root may be the directory itself
    (tmp_path / "other").mkdir()
    assert cifar10.find(tmp_path / "other") is None


def test_find_ignores_a_file_with_the_directory_name(tmp_path):
    (tmp_path / cifar10.DIRNAME).write_text("not a directory")
    assert cifar10.find(tmp_path) is None


def test_ensure_without_download_on_empty_dir(tmp_path):
    with pytest.raises(DataError) as exc:
        cifar10.ensure(tmp_path, allow_download=False)
    assert str(tmp_path) in str(exc.value)
    assert list(tmp_path.iterdir()) == []  # nothing created


def test_ensure_existing_directory(tmp_path):
    d = tmp_path / "cifar10" / cifar10.DIRNAME
    _write_dataset(d)
    directory, sizes = cifar10.ensure(tmp_path, allow_download=False)
    assert directory == d
    assert sizes == (sum(TRAIN_SIZES), TEST_SIZE)


def test_ensure_verifies_existing_directory(tmp_path):
    d = tmp_path / cifar10.DIRNAME
    _write_dataset(d)
    (d / "test_batch").write_bytes(b"\x80\x02}(")
    with pytest.raises(DataError, match="test_batch"):
        cifar10.ensure(tmp_path, allow_download=False)


# ---------------------------------------------------------------------------- download


def _tarball(tmp_path: Path) -> tuple[Path, dict]:
    src = tmp_path / "src"
    expected = _write_dataset(src / cifar10.DIRNAME, seed=7)
    tar_path = tmp_path / "served" / "cifar-10-python.tar.gz"
    tar_path.parent.mkdir()
    with tarfile.open(tar_path, "w:gz") as tar:
        tar.add(src / cifar10.DIRNAME, arcname=cifar10.DIRNAME)
    return tar_path, expected


def test_download_md5_mismatch_leaves_nothing(tmp_path):
    tar_path, _ = _tarball(tmp_path)
    root = tmp_path / "root"
    with pytest.raises(DataError, match="md5"):
        cifar10.download(root, url=tar_path.as_uri(), md5="0" * 32)
    assert list((root / "cifar10").iterdir()) == []  # no .part, no tarball, nothing extracted
    assert cifar10.find(root) is None


def test_download_with_official_md5_rejects_other_tarball(tmp_path):
    tar_path, _ = _tarball(tmp_path)
    root = tmp_path / "root"
    with pytest.raises(DataError, match=cifar10.TARBALL_MD5):
        cifar10.download(root, url=tar_path.as_uri())  # default md5 is the official one
    assert list((root / "cifar10").iterdir()) == []


def test_download_correct_md5_extracts_and_verifies(tmp_path):
    tar_path, expected = _tarball(tmp_path)
    md5 = hashlib.md5(tar_path.read_bytes()).hexdigest()
    root = tmp_path / "root"
    directory = cifar10.download(root, url=tar_path.as_uri(), md5=md5)
    assert directory == root / "cifar10" / cifar10.DIRNAME
    assert cifar10.find(root) == directory
    assert cifar10.verify(directory) == (sum(TRAIN_SIZES), TEST_SIZE)
    x, y = cifar10.load_split(directory, "train")
    np.testing.assert_array_equal(x, expected["train"][0])
    np.testing.assert_array_equal(y, expected["train"][1])
    assert not list((root / "cifar10").glob("*.part"))
    # a later ensure() finds it without downloading
    assert cifar10.ensure(root, allow_download=False) == (
        directory,
        (sum(TRAIN_SIZES), TEST_SIZE),
    )


def test_download_unreachable_url_is_data_error(tmp_path):
    root = tmp_path / "root"
    url = (tmp_path / "does-not-exist.tar.gz").as_uri()
    with pytest.raises(DataError) as exc:
        cifar10.download(root, url=url)
    assert url in str(exc.value)
    assert list((root / "cifar10").iterdir()) == []


class _DroppingResponse:
    """A response that delivers one chunk and then loses the connection."""

    def __init__(self) -> None:
        self.calls = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def read(self, n=-1):
        self.calls += 1
        if self.calls == 1:
            return b"\x1f\x8b partial tarball bytes"
        raise ConnectionResetError("connection reset by peer")


def test_download_interrupted_mid_transfer_leaves_no_part_file(tmp_path, monkeypatch):
    response = _DroppingResponse()
    monkeypatch.setattr(cifar10.urllib.request, "urlopen", lambda url, timeout: response)
    root = tmp_path / "root"
    with pytest.raises(DataError, match="connection reset"):
        cifar10.download(root, url="https://example.invalid/cifar.tar.gz")
    assert response.calls == 2  # the first chunk was written before the failure
    assert list((root / "cifar10").iterdir()) == []


def test_ensure_downloads_when_allowed(tmp_path, monkeypatch):
    tar_path, _ = _tarball(tmp_path)
    md5 = hashlib.md5(tar_path.read_bytes()).hexdigest()
    real_download = cifar10.download
    calls = []

    def local_download(root):
        calls.append(root)
        return real_download(root, url=tar_path.as_uri(), md5=md5)

    monkeypatch.setattr(cifar10, "download", local_download)
    root = tmp_path / "root"
    directory, sizes = cifar10.ensure(root, allow_download=True)
    assert calls == [root]
    assert directory == root / "cifar10" / cifar10.DIRNAME
    assert sizes == (sum(TRAIN_SIZES), TEST_SIZE)
    cifar10.ensure(root, allow_download=True)
    assert calls == [root]  # already there: no second download


def test_py2_writer_matches_pickle_semantics():
    # guard for the helper itself: the hand-written bytes decode (with plain pickle, as
    # torchvision does) to the same dict the py3 writer produces
    rng = np.random.default_rng(5)
    images, labels = _make_split(rng, 2)
    flat = _flatten(images)
    obj = pickle.load(io.BytesIO(_py2_batch(labels, flat)), encoding="latin1")
    assert obj["labels"] == [int(v) for v in labels]
    np.testing.assert_array_equal(obj["data"], flat)
    assert obj["filenames"] == ["img_0.png", "img_1.png"]
