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


# ---------------------------------------------------------------------------- scan (the preflight)


def test_scan_counts_rows_and_finds_the_largest_index(tmp_path):
    for path in (
        _write(tmp_path / "p" / "d", "# header\n" + TRAIN + "\n"),
        _write(tmp_path / "c" / "d.bz2", "# header\n" + TRAIN, compress=True),
    ):
        facts = libsvm.scan(path)
        assert facts.rows == 3 == len(libsvm.load(path)[1])
        assert (facts.max_index, facts.max_index_line) == (10, 2)
        assert facts.n_features == 10 == libsvm.load(path)[0].shape[1]


def test_scan_n_features_follows_the_loaders_zero_based_rule(tmp_path):
    path = _write(tmp_path / "z", "+1 0:1 4:1\n-1 2:1\n")  # an index 0: the file is 0-based
    assert libsvm.scan(path).n_features == 5 == libsvm.load(path)[0].shape[1]


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("+1 3:1 11:1\n-1 3:1 11:1 14", 2, "'14' is not index:value"),  # truncated mid-way
        ("+1 3:1 11:1\n-1 3:1 11:", 2, "value '' is not a number"),  # truncated after ':'
        ("+1 3:1\nthis is not libsvm\n", 2, "label 'this' is not a number"),
        ("+1 1:1\n-1 2:1\n7 1:1\n", 3, "label 7 is not binary"),
        ("-1 1:1\n+1 1:1\n0 1:1\n", 3, "label 0 after label -1 on line 1"),
        ("0 1:1\n-1 2:1\n", 2, "label -1 after label 0 on line 1"),
        ("+1 3:1 2:1\n", 1, "not sorted and unique"),
        ("+1 3:1 3:1\n", 1, "not sorted and unique"),
        ("+1 -3:1\n", 1, "index -3 is negative"),
        ("+1 x:1\n", 1, "index 'x' is not an integer"),
        ("+1 1:1:2\n", 1, "value '1:2' is not a number"),
        ("+1 4294967296:1\n", 1, "index 4294967296 is too large"),
        ("# c\n\n+1 1:1\n+1 1:1\x00\n", 4, "NUL byte"),
        ("+1 qid 1:1\n", 1, "'qid' is not index:value"),
        ("nan 1:1\n", 1, "label nan is not binary"),
    ],
)
def test_scan_names_the_file_and_line_of_bad_content(tmp_path, text, line, fragment):
    path = _write(tmp_path / "a9a", text)
    with pytest.raises(DataError) as exc:
        libsvm.scan(path)
    msg = str(exc.value)
    assert f"LIBSVM file {path}, line {line}: " in msg and fragment in msg, msg
    assert "\n" not in msg


LINES_BOTH_ACCEPT = [
    "+1 qid:3 1:1",
    "+1 qid:x 2:1",  # the loader ignores qid values
    "1 1:1 # comment 3:x",
    "+1",
    "1e0 1:1",
    "\t1\t1:1\r",
    "1 1:1e99",
    "1 1:nan 2:-inf",
    "1 1_0:1",  # Python's int() reads underscores, and so does the loader's
    "-1.0 0:1",
]
LINES_BOTH_REFUSE = [
    "1 1:1:2",
    "1 1:1 1:1",
    "1 2:1 1:1",
    "1 -1:1",
    "1 :1",
    "1 1:",
    "1 1",
    "1 qid 1:1",
    "x 1:1",
    "2 1:1",
    "0.5 1:1",
    "1 3000000000:1",
]


@pytest.mark.parametrize("line", LINES_BOTH_ACCEPT)
def test_scan_accepts_what_the_loader_accepts(tmp_path, line):
    path = _write(tmp_path / "d", "1 1:1\n" + line + "\n")
    facts = libsvm.scan(path)
    x, y = libsvm.load(path)
    assert facts.rows == len(y) and facts.n_features == x.shape[1]


@pytest.mark.parametrize("line", LINES_BOTH_REFUSE)
def test_scan_refuses_what_the_loader_refuses(tmp_path, line):
    path = _write(tmp_path / "d", "1 1:1\n" + line + "\n")
    with pytest.raises(DataError, match="line 2: "):
        libsvm.scan(path)
    with pytest.raises(DataError):
        libsvm.load(path)


def test_scan_of_a_truncated_bz2_names_the_file(tmp_path):
    packed = bz2.compress(TRAIN.encode() * 50)
    path = tmp_path / "d.bz2"
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(DataError, match="cannot be read") as exc:
        libsvm.scan(path)
    assert str(path) in str(exc.value)


# ------------------------------------------------------------------------- check (features)


def test_check_refuses_an_index_past_a_known_datasets_features(tmp_path):
    train = _write(tmp_path / "a9a", "+1 3:1 123:1\n-1 5:1 8000:1\n")
    test = _write(tmp_path / "a9a.t", "-1 2:1\n")
    with pytest.raises(DataError) as exc:
        libsvm.check("a9a", train, test)
    msg = str(exc.value)
    assert f"LIBSVM file {train}, line 2: " in msg
    assert "feature index 8000" in msg and "a9a has 123 features" in msg


def test_check_accepts_a_known_dataset_within_its_features(tmp_path):
    train = _write(tmp_path / "a9a", "+1 3:1 123:1\n-1 5:1\n")
    test = _write(tmp_path / "a9a.t", "-1 2:1 122:1\n")
    train_facts, test_facts = libsvm.check("a9a", train, test)
    assert (train_facts.rows, test_facts.rows) == (2, 1)


def test_check_refuses_an_unknown_dataset_too_large_when_dense(tmp_path):
    train = _write(tmp_path / "mine", "+1 3:1\n-1 5:1 8000:1\n")
    test = _write(tmp_path / "mine.t", "-1 2:1\n")
    with pytest.raises(DataError) as exc:
        libsvm.check("mine", train, test, dense_limit=10_000)
    msg = str(exc.value)
    assert "3 rows × 8000 features" in msg and "96.0 kB" in msg and "10.0 kB" in msg
    assert f"{train}, line 2" in msg  # where the largest index is
    libsvm.check("mine", train, test, dense_limit=96_000)  # at the limit: fine


def test_dense_limit_is_two_gigabytes():
    assert libsvm.DENSE_LIMIT_BYTES == 2 * 10**9


def test_scan_is_fast_on_a9a(real_data):
    """The whole real a9a pair (48,842 lines) is checked in the launcher on every run."""
    import time

    train, test = libsvm.locate(real_data, "a9a")
    start = time.perf_counter()
    train_facts, test_facts = libsvm.check("a9a", train, test)
    elapsed = time.perf_counter() - start
    assert (train_facts.rows, test_facts.rows) == (32561, 16281)
    assert (train_facts.n_features, test_facts.n_features) == (123, 122)
    assert elapsed < 2.0, elapsed  # ~0.3 s; generous for a loaded CI machine
