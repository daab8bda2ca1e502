"""WikiText-2 on the real files: the reference vocabulary, checksums, and the 3a batching
(columns split over ranks, shared window lengths, validation split exactly over ranks)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mlbench.data import bptt, wikitext2
from mlbench.errors import DataError


@pytest.fixture(scope="module")
def corpus(real_wikitext2: Path) -> wikitext2.Corpus:
    return wikitext2.load(real_wikitext2)


# --- the format ------------------------------------------------------------------------------


def test_the_reference_vocabulary_and_token_counts(corpus: wikitext2.Corpus) -> None:
    assert corpus.vocab_size == wikitext2.VOCAB_SIZE == 33_278
    assert (len(corpus.train), len(corpus.valid), len(corpus.test)) == (
        2_088_628,
        217_646,
        245_569,
    )
    # the train file opens with an empty line, so <eos> is id 0; then the first title's words
    assert corpus.words[:6] == ("<eos>", "=", "Valkyria", "Chronicles", "III", "Senjō")
    # one <eos> per line: the official files have 36,718 / 3,760 / 4,358 lines
    eos = [int((s == 0).sum()) for s in (corpus.train, corpus.valid, corpus.test)]
    assert eos == [36_718, 3_760, 4_358]
    # every id is used, ids are dense, and first appearances are in id order
    stream = np.concatenate([corpus.train, corpus.valid, corpus.test])
    _, first = np.unique(stream, return_index=True)
    assert len(first) == corpus.vocab_size and (np.diff(first) > 0).all()


def test_ids_decode_back_to_the_file(corpus: wikitext2.Corpus, real_wikitext2: Path) -> None:
    lines = (real_wikitext2 / "wiki.valid.tokens").read_text(encoding="utf-8").split("\n")[:50]
    words = [w for line in lines for w in [*line.split(), "<eos>"]]
    assert [corpus.words[i] for i in corpus.valid[: len(words)]] == words


def test_tokenize_follows_text_mode_lines_and_first_appearance() -> None:
    texts = {
        "train": " b a \n \r\na\x0cb\rc",  # \r\n and \r end lines; a form feed is whitespace
        "valid": "d b\n",  # a final newline does not start another line
        "test": "a\u2028e\n",  # U+2028 is whitespace to split(), not a line end in a file
    }
    c = wikitext2.tokenize(texts)
    assert c.words == ("b", "a", "<eos>", "c", "d", "e")
    assert c.train.tolist() == [0, 1, 2, 2, 1, 0, 2, 3, 2]
    assert c.valid.tolist() == [4, 0, 2]
    assert c.test.tolist() == [1, 5, 2]
    assert c.train.dtype == np.int64
    with pytest.raises(ValueError, match="unknown WikiText-2 split"):
        c.split("dev")


def test_find_accepts_the_usual_layouts(real_wikitext2: Path, tmp_path: Path) -> None:
    root = real_wikitext2.parent.parent  # DEST (materialize.py's layout)
    assert wikitext2.find(root) == real_wikitext2
    assert wikitext2.find(real_wikitext2.parent) == real_wikitext2  # the zip extracted
    assert wikitext2.find(real_wikitext2) == real_wikitext2
    assert wikitext2.find(tmp_path) is None
    with pytest.raises(DataError, match="WikiText-2 not found"):
        wikitext2.ensure(tmp_path)
    assert wikitext2.ensure(root) == real_wikitext2


def test_an_edited_or_truncated_file_is_refused(real_wikitext2: Path, tmp_path: Path) -> None:
    for name in wikitext2.FILES.values():
        shutil.copy(real_wikitext2 / name, tmp_path / name)
    wikitext2.check(tmp_path)  # the copies are fine
    valid = tmp_path / "wiki.valid.tokens"
    raw = bytearray(valid.read_bytes())
    raw[1000] = ord("x") if raw[1000] != ord("x") else ord("y")  # same size, one byte edited
    valid.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"not the official wiki\.valid\.tokens"):
        wikitext2.check(tmp_path)
    with pytest.raises(DataError, match=r"not the official wiki\.valid\.tokens"):
        wikitext2.load(tmp_path)
    assert wikitext2.load(tmp_path, verify=False).vocab_size >= wikitext2.VOCAB_SIZE - 1
    valid.write_bytes(bytes(raw[:5000]))
    with pytest.raises(DataError, match="has 5000 bytes, not the official 1121681"):
        wikitext2.check(tmp_path)
    valid.unlink()
    with pytest.raises(DataError, match="missing"):
        wikitext2.load(tmp_path)
    valid.write_bytes(b"\xff\xfe not utf-8\n")
    with pytest.raises(DataError, match="not UTF-8"):
        wikitext2.load(tmp_path, verify=False)


# --- training columns and windows ------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 3])
def test_ranks_columns_partition_the_stream(corpus: wikitext2.Corpus, k: int) -> None:
    stream = corpus.train
    ranks = [bptt.TrainWindows(stream, 20, r, k, seed=43) for r in range(k)]
    rows = len(stream) // (20 * k)
    assert all(w.data.shape == (rows, 20) for w in ranks)
    # rank r's column c is the (20r + c)-th contiguous segment of the stream: reading the ranks'
    # columns in order gives back the stream, trimmed to a multiple of 20·k
    joined = torch.cat([w.data.t().reshape(-1) for w in ranks])
    assert torch.equal(joined, torch.from_numpy(stream[: rows * 20 * k]))
    assert len(stream) - len(joined) < 20 * k


def test_every_rank_draws_the_same_window_lengths(corpus: wikitext2.Corpus) -> None:
    ranks = [bptt.TrainWindows(corpus.train, 20, r, 4, seed=43) for r in range(4)]
    for epoch in (0, 1):
        for w in ranks:
            w.set_epoch(epoch)
        lengths = [[x.seq_len for x in w] for w in ranks]
        assert all(one == lengths[0] for one in lengths)
        assert lengths[0] == ranks[0].lengths() and len(ranks[0]) == len(lengths[0])
    ranks[0].set_epoch(0)
    epoch0 = ranks[0].lengths()
    ranks[0].set_epoch(1)
    assert ranks[0].lengths() != epoch0  # a new draw every epoch ...
    ranks[0].set_epoch(0)
    assert ranks[0].lengths() == epoch0  # ... reproducible from (seed, epoch)
    other_seed = bptt.TrainWindows(corpus.train, 20, 0, 4, seed=44)
    assert other_seed.lengths() != epoch0
    assert bptt.draw_lengths(10_000, -43, 0) != bptt.draw_lengths(10_000, 43, 0)


def test_window_lengths_follow_the_reference_draw() -> None:
    lengths = np.array(bptt.draw_lengths(5_000_000, 43, 0)[:-1])  # the last may be cut
    assert lengths.min() >= 5
    short = lengths < 52  # between the two modes (35 and 70, each with sd 5)
    assert abs(short.mean() - 0.05) < 0.005
    assert abs(lengths[~short].mean() - 69.5) < 0.1  # int() truncates N(70, 5): mean 69.5
    assert abs(lengths[~short].std() - 5.0) < 0.1
    assert abs(lengths[short].mean() - 34.5) < 0.3
    # a tiny sd and a high floor: N(8, 0.1) truncates to 7 or 8, N(4, 0.1) is floored to 6
    draw = bptt.WindowDraw(8, sigma=0.1, min_len=6)
    assert set(bptt.draw_lengths(10_000, 0, 0, draw)[:-1]) == {6, 7, 8}


def test_windows_read_every_row_once_in_order(corpus: wikitext2.Corpus) -> None:
    w = bptt.TrainWindows(corpus.train[:100_000], 20, 1, 2, seed=43)
    rows, i = w.rows, 0
    for x in w:
        assert x.inputs.shape == x.targets.shape == (x.seq_len, 20)
        assert torch.equal(x.inputs, w.data[i : i + x.seq_len])
        assert torch.equal(x.targets, w.data[i + 1 : i + 1 + x.seq_len])
        i += x.seq_len
    # as the reference: windows start while i < rows − 2, so the last target row is rows − 1
    # or (when a window ends exactly at rows − 2) rows − 2
    assert i in (rows - 1, rows - 2)
    assert len(w) == len(w.lengths())


def test_too_little_data_and_bad_ranks_are_refused() -> None:
    with pytest.raises(ValueError, match="too few for one window"):
        bptt.TrainWindows(np.arange(40), 20, 0, 1, seed=0)
    with pytest.raises(ValueError, match="outside world"):
        bptt.TrainWindows(np.arange(4000), 20, 2, 2, seed=0)
    with pytest.raises(ValueError, match="outside world"):
        bptt.eval_columns(10, -1, 2)


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 3, 4, 11])
def test_validation_scores_each_target_once_over_the_ranks(
    corpus: wikitext2.Corpus, k: int
) -> None:
    stream = corpus.valid
    reference = bptt.batchify(torch.from_numpy(stream), 10)  # what one worker evaluates
    rows = len(reference)
    seen = torch.zeros(rows, 10, dtype=torch.int64)  # times each (row, column) is a target
    total = 0
    for r in range(k):
        ev = bptt.EvalWindows(stream, 10, r, k)
        total += ev.targets
        row = 0
        for x in ev:
            assert x.seq_len <= 70 and x.inputs.shape == x.targets.shape
            cols = list(ev.columns)
            assert torch.equal(x.targets, reference[row + 1 : row + 1 + x.seq_len, cols])
            assert torch.equal(x.inputs, reference[row : row + x.seq_len, cols])
            seen[row + 1 : row + 1 + x.seq_len, cols] += 1
            row += x.seq_len
        assert len(list(ev)) == len(ev)
    assert (seen[1:] == 1).all() and (seen[0] == 0).all()
    assert total == 10 * (rows - 1) == 217_630
    sizes = [len(bptt.eval_columns(10, r, k)) for r in range(k)]
    assert sum(sizes) == 10 and max(sizes) - min(sizes) <= 1


def test_batchify_matches_the_reference_layout() -> None:
    stream = torch.arange(23)
    out = bptt.batchify(stream, 4)
    assert out.shape == (5, 4)
    assert out[:, 1].tolist() == [5, 6, 7, 8, 9]  # column j is the j-th segment
    with pytest.raises(ValueError, match="columns must be at least 1"):
        bptt.batchify(stream, 0)
