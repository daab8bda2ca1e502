"""mlbench.data.libsvm: LIBSVM text files (plain and .bz2), binary labels, train/test pairs."""

from __future__ import annotations

import bz2

import numpy as np
import pytest

from mlbench.data import libsvm
from mlbench.errors import DataError

TRAIN = "+1 3:1 10:0.5\n-1 1:1\n+1 2:0.25 3:-2\n"
TEST = "-1 12:2\n+1 1:1 4:3\n"


def _write(path, text, *, compress=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        path.write_bytes(bz2.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def test_load_dense_features_and_01_labels(tmp_path):
    x, y = libsvm.load(_write(tmp_path / "a9a", TRAIN))
    assert x.dtype == np.float32 and y.dtype == np.float32
    expected = np.zeros((3, 10), np.float32)
    expected[0, 2], expected[0, 9] = 1.0, 0.5  # 1-based indices 3 and 10
    expected[1, 0] = 1.0
    expected[2, 1], expected[2, 2] = 0.25, -2.0
    np.testing.assert_array_equal(x, expected)
    np.testing.assert_array_equal(y, [1.0, 0.0, 1.0])


def test_bz2_variant_loads_the_same(tmp_path):
    plain = libsvm.load(_write(tmp_path / "p" / "a9a", TRAIN))
    packed = libsvm.load(_write(tmp_path / "c" / "a9a.bz2", TRAIN, compress=True))
    np.testing.assert_array_equal(plain[0], packed[0])
    np.testing.assert_array_equal(plain[1], packed[1])


@pytest.mark.parametrize(
    ("text", "labels"),
    [
        ("1 1:1\n0 2:1\n0 1:2\n", [1.0, 0.0, 0.0]),  # {0,1} kept
        ("-1 1:1\n-1 2:1\n", [0.0, 0.0]),  # only negatives
        ("+1 1:1\n1 2:1\n", [1.0, 1.0]),
        ("1.0 1:1\n-1.0 2:1\n", [1.0, 0.0]),
    ],
)
def test_label_mapping(tmp_path, text, labels):
    _, y = libsvm.load(_write(tmp_path / "d", text))
    np.testing.assert_array_equal(y, labels)


@pytest.mark.parametrize(
    "text",
    ["1 1:1\n2 1:1\n3 2:1\n", "-1 1:1\n0 1:1\n1 1:1\n", "0.5 1:1\n1 1:1\n", "2 1:1\n"],
)
def test_non_binary_labels_are_data_error(tmp_path, text):
    path = _write(tmp_path / "multi", text)
    with pytest.raises(DataError, match="not binary") as exc:
        libsvm.load(path)
    assert str(path) in str(exc.value)


@pytest.mark.parametrize(
    ("name", "content"),
    [("garbage", b"this is not libsvm\n"), ("bad.bz2", b"not a bz2 stream")],
)
def test_unreadable_file_is_data_error(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match="cannot be read") as exc:
        libsvm.load(path)
    assert name in str(exc.value)


def test_missing_file_is_data_error(tmp_path):
    with pytest.raises(DataError, match="cannot be read"):
        libsvm.load(tmp_path / "nope")
    with pytest.raises(DataError, match="cannot be read"):
        libsvm.count_rows(tmp_path / "nope")


def test_load_with_explicit_feature_count(tmp_path):
    x, _ = libsvm.load(_write(tmp_path / "a", TRAIN), n_features=15)
    assert x.shape == (3, 15)
    assert x[:, 10:].sum() == 0


# ---------------------------------------------------------------------------- locate


@pytest.mark.parametrize(
    ("train_rel", "test_rel"),
    [
        ("a9a", "a9a.t"),
        ("libsvm/a9a", "libsvm/a9a.t"),
        ("a9a.bz2", "a9a.t.bz2"),
        ("libsvm/a9a.bz2", "a9a.t"),
    ],
)
def test_locate_finds_name_and_name_t(tmp_path, train_rel, test_rel):
    _write(tmp_path / train_rel, TRAIN)
    _write(tmp_path / test_rel, TEST)
    assert libsvm.locate(tmp_path, "a9a") == (tmp_path / train_rel, tmp_path / test_rel)


def test_locate_prefers_root_over_subdir_and_plain_over_bz2(tmp_path):
    for rel in ("a9a", "a9a.bz2", "libsvm/a9a", "a9a.t.bz2", "libsvm/a9a.t"):
        _write(tmp_path / rel, TRAIN, compress=rel.endswith(".bz2"))
    train, test = libsvm.locate(tmp_path, "a9a")
    assert train == tmp_path / "a9a"
    assert test == tmp_path / "a9a.t.bz2"


def test_locate_epsilon_uses_the_served_file_name(tmp_path):
    _write(tmp_path / "libsvm" / "epsilon_normalized.bz2", TRAIN, compress=True)
    _write(tmp_path / "libsvm" / "epsilon_normalized.t.bz2", TEST, compress=True)
    train, test = libsvm.locate(tmp_path, "epsilon")
    assert train.name == "epsilon_normalized.bz2"
    assert test.name == "epsilon_normalized.t.bz2"


def test_locate_missing_test_file_names_it(tmp_path):
    _write(tmp_path / "a9a", TRAIN)
    with pytest.raises(DataError) as exc:
        libsvm.locate(tmp_path, "a9a")
    msg = str(exc.value)
    assert "a9a.t" in msg
    assert str(tmp_path) in msg and str(tmp_path / "libsvm") in msg


def test_locate_missing_train_file_names_it(tmp_path):
    _write(tmp_path / "a9a.t", TEST)
    with pytest.raises(DataError) as exc:
        libsvm.locate(tmp_path, "a9a")
    assert "a9a[" in str(exc.value)  # "a9a[.bz2]", the train file, not a9a.t


def test_locate_epsilon_missing_gives_download_hint(tmp_path):
    with pytest.raises(DataError, match="epsilon_normalized") as exc:
        libsvm.locate(tmp_path, "epsilon")
    assert libsvm.URLS["epsilon"] in str(exc.value)


def test_locate_ignores_directories_with_the_name(tmp_path):
    (tmp_path / "a9a").mkdir()
    _write(tmp_path / "a9a.t", TEST)
    with pytest.raises(DataError):
        libsvm.locate(tmp_path, "a9a")


# ---------------------------------------------------------------------------- load_pair, count_rows


def test_load_pair_pads_to_common_feature_count(tmp_path):
    _write(tmp_path / "a9a", TRAIN)  # max index 10
    _write(tmp_path / "a9a.t", TEST)  # max index 12
    (x_train, y_train), (x_test, y_test) = libsvm.load_pair(tmp_path, "a9a")
    assert x_train.shape == (3, 12) and x_test.shape == (2, 12)
    assert x_train[:, 10:].sum() == 0
    assert x_train[0, 9] == 0.5  # original columns unchanged by the padding
    assert x_test[0, 11] == 2.0 and x_test[1, 3] == 3.0
    np.testing.assert_array_equal(y_train, [1, 0, 1])
    np.testing.assert_array_equal(y_test, [0, 1])


def test_load_pair_pads_test_when_train_is_wider(tmp_path):
    _write(tmp_path / "libsvm" / "w8a.bz2", "+1 20:1\n", compress=True)
    _write(tmp_path / "libsvm" / "w8a.t", "-1 2:1\n")
    (x_train, _), (x_test, _) = libsvm.load_pair(tmp_path, "w8a")
    assert x_train.shape == (1, 20) and x_test.shape == (1, 20)
    assert x_test[0, 1] == 1.0 and x_test.sum() == 1.0


@pytest.mark.parametrize("compress", [False, True])
def test_count_rows(tmp_path, compress):
    text = "+1 1:1\n\n-1 2:1\n   \n+1 3:1"  # blank lines ignored; no trailing newline
    path = _write(tmp_path / ("d.bz2" if compress else "d"), text, compress=compress)
    assert libsvm.count_rows(path) == 3
    assert libsvm.count_rows(path) == len(libsvm.load(path)[1])


def test_count_rows_corrupt_bz2(tmp_path):
    path = tmp_path / "d.bz2"
    path.write_bytes(b"BZh9 not really")
    with pytest.raises(DataError, match="cannot be read"):
        libsvm.count_rows(path)


def test_count_rows_agrees_with_load_on_comment_lines(tmp_path):
    path = _write(tmp_path / "d", "# generated\n+1 1:1\n-1 2:1\n")
    assert libsvm.count_rows(path) == len(libsvm.load(path)[1]) == 2
