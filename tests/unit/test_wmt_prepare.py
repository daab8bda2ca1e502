"""``mlbench data prepare wmt16|wmt17|wikitext2`` on real data: Multi30k as the training corpus
(the WMT corpora are not available offline) and the real newstest2014 as the test set, with a
small subword vocabulary so each preparation takes a few seconds."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mlbench.cli.main import main
from mlbench.data import wikitext2, wmt, wmt_prepare
from mlbench.errors import DataError

TRAIN = ["multi30k/train"]


@pytest.fixture(scope="module")
def prepared(real_wmt: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("prepared")
    return {
        "wmt16": wmt_prepare.prepare("wmt16", real_wmt, out, train=TRAIN, merges=2000),
        "wmt17": wmt_prepare.prepare("wmt17", real_wmt, out, train=TRAIN, vocab_size=2000),
    }


def _raw(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]


@pytest.mark.parametrize("dataset", ["wmt16", "wmt17"])
def test_prepared_layout_vocab_and_manifest(
    prepared: dict[str, Path], real_wmt: Path, dataset: str
) -> None:
    data = wmt.load_prepared(prepared[dataset])
    vocab = data.vocab
    assert vocab.tokens[:4] == ["<pad>", "<unk>", "<s>", "<\\s>"]
    assert (wmt.PAD, wmt.UNK, wmt.BOS, wmt.EOS) == (0, 1, 2, 3)
    assert vocab.size % 8 == 0 and vocab.size >= len(vocab.tokens)
    m = data.manifest
    # Multi30k is not the official corpus, and the vocabulary is smaller than the recipe's
    assert not data.official and len(m["nonofficial_reasons"]) == 2
    assert m["inputs"]["multi30k/train.en.gz"]["sha256"] == wmt.sha256_file(
        real_wmt / "multi30k/train.en.gz"
    )
    assert m["inputs"]["multi30k/train.en.gz"]["lines"] == 29_000
    assert set(m["outputs"]) >= {"train.npz", "test.npz", "vocab.txt", "newstest2014.de"}
    assert len(data.train) == m["counts"]["train_pairs"]
    # the raw references verbatim, every one of the 3003 test sentences kept
    assert (prepared[dataset] / "newstest2014.de").read_bytes() == (
        real_wmt / "newstest2014.de"
    ).read_bytes()
    assert len(data.test_src) == len(data.test_refs) == 3003
    assert int(data.train.src.ids.max()) < vocab.size and int(data.train.src.lengths.min()) >= 1


def test_wmt16_follows_the_mlperf_filters(prepared: dict[str, Path]) -> None:
    m = wmt.read_manifest(prepared["wmt16"])
    counts = m["counts"]
    # Multi30k captions are short (nothing over 80 words) but 224 pairs hold non-latin-1 text
    assert counts["train_pairs_read"] == counts["after_clean"] == 29_000
    assert counts["after_latin1"] == counts["train_pairs"] == 28_776
    vocab = wmt.load_prepared(prepared["wmt16"]).vocab
    assert vocab.tokens[-1].startswith("madeupword") or len(vocab.tokens) % 8 == 0
    assert len(vocab.tokens) % 8 == 0


@pytest.mark.parametrize(("dataset", "exact"), [("wmt16", 0.8), ("wmt17", 1.0)])
def test_encode_decode_round_trip_on_real_sentences(
    prepared: dict[str, Path], real_wmt: Path, dataset: str, exact: float
) -> None:
    data = wmt.load_prepared(prepared[dataset])
    source = _raw(real_wmt / "newstest2014.en")
    same, known = 0, 0
    for i, text in enumerate(source):
        ids = data.vocab.encode(text)
        assert ids == data.test_src.tolist(i)  # encode = the preparation pipeline
        if wmt.UNK in ids:
            continue  # characters Multi30k never saw
        known += 1
        same += data.vocab.decode(ids) == text
    assert known > 2900
    # Moses detokenisation is not an exact inverse (German rules on English text)
    assert same >= exact * known
    assert data.vocab.decode(data.vocab.encode(source[0])) == source[0]


def test_a_tampered_or_truncated_output_is_refused(
    prepared: dict[str, Path], tmp_path: Path
) -> None:
    copy = tmp_path / "wmt16"
    shutil.copytree(prepared["wmt16"], copy)
    wmt.check(copy)
    npz = copy / "train.npz"
    raw = bytearray(npz.read_bytes())
    raw[len(raw) // 2] ^= 1
    npz.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="does not match its manifest"):
        wmt.load_prepared(copy)
    npz.write_bytes(bytes(raw[:-10]))
    with pytest.raises(DataError, match="truncated or edited"):
        wmt.check(copy)
    shutil.copyfile(prepared["wmt16"] / "train.npz", npz)
    (copy / "vocab.txt").unlink()
    with pytest.raises(DataError, match="missing"):
        wmt.check(copy)
    with pytest.raises(DataError, match="holds prepared wmt17, not wmt16"):
        wmt.check(prepared["wmt17"], "wmt16")
    with pytest.raises(DataError, match=r"vocab\.txt cannot be read"):
        wmt.load_prepared(copy, verify=False)  # without the check: still a one-line error
    shutil.copyfile(prepared["wmt16"] / "vocab.txt", copy / "vocab.txt")
    assert wmt.load_prepared(copy).train.src.ids.size > 0


def _source(real_wmt: Path, tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for lang in ("en", "de"):
        shutil.copyfile(real_wmt / f"newstest2014.{lang}", src / f"newstest2014.{lang}")
    return src


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("mlbench: error:")]
    assert len(errors) == 1, err
    return errors[0]


def test_bad_inputs_stop_with_one_line(
    real_wmt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _source(real_wmt, tmp_path)
    out = tmp_path / "out"
    base = ["data", "prepare", "wmt16", "--source", str(src), "--out", str(out), "--merges", "50"]
    # a gzip cut in the middle (an interrupted download)
    data = (real_wmt / "multi30k/train.en.gz").read_bytes()
    (src / "cut.en.gz").write_bytes(data[: len(data) // 2])
    shutil.copyfile(real_wmt / "multi30k/train.de.gz", src / "cut.de.gz")
    assert "not a complete gzip" in _one_line_error(capsys, [*base, "--train", "cut"])
    # not gzip at all
    (src / "junk.en.gz").write_bytes(b"not gzip")
    shutil.copyfile(real_wmt / "multi30k/val.de.gz", src / "junk.de.gz")
    assert "not a complete gzip" in _one_line_error(capsys, [*base, "--train", "junk"])
    # en and de from different corpora: 29,000 vs 1,014 lines
    shutil.copyfile(real_wmt / "multi30k/train.en.gz", src / "mix.en.gz")
    shutil.copyfile(real_wmt / "multi30k/val.de.gz", src / "mix.de.gz")
    line = _one_line_error(capsys, [*base, "--train", "mix"])
    assert "29000 lines" in line and "1014" in line and "not aligned" in line
    # a missing file, and the default (official) corpus absent
    assert "input file missing" in _one_line_error(capsys, [*base, "--train", "nothere"])
    assert "europarl-v7.de-en.en" in _one_line_error(capsys, base)
    # a test set that is not the official newstest2014
    shutil.copyfile(real_wmt / "multi30k/val.en.gz", src / "ok.en.gz")
    shutil.copyfile(real_wmt / "multi30k/val.de.gz", src / "ok.de.gz")
    refs = (src / "newstest2014.de").read_bytes()
    (src / "newstest2014.de").write_bytes(refs.replace(b"Gutach", b"Gutsch", 1))
    assert "not the official raw newstest2014" in _one_line_error(capsys, [*base, "--train", "ok"])
    assert not out.exists()  # nothing was written for any of these


def test_invalid_utf8_names_the_line(real_wmt: Path, tmp_path: Path) -> None:
    src = _source(real_wmt, tmp_path)
    (src / "bad.en").write_bytes(b"A dog runs.\nA cat \xff sleeps.\n")
    (src / "bad.de").write_bytes(b"Ein Hund rennt.\nEine Katze schl\xc3\xa4ft.\n")
    with pytest.raises(DataError, match=r"bad.en is not UTF-8 text \(line 2"):
        wmt_prepare.prepare("wmt16", src, tmp_path / "out", train=["bad"], merges=10)


def test_cli_end_to_end_and_help(
    real_wmt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["data", "prepare", "--help"])
    assert exc.value.code == 0
    help_text = capsys.readouterr().out
    for needle in ("europarl", "commoncrawl", "news-commentary-v11", "newstest2014", "--train"):
        assert needle in help_text
    out = tmp_path / "out"
    argv = ["data", "prepare", "wmt17", "--source", str(real_wmt), "--out", str(out)]
    argv += ["--train", "multi30k/val", "--vocab-size", "500", "--workers", "1", "--json"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    manifest = json.loads(captured.out)
    assert manifest["dataset"] == "wmt17" and manifest["counts"]["train_pairs"] == 1014
    assert "trained sentencepiece: 500 pieces" in captured.err  # a progress line per stage
    assert manifest == wmt.check(out / "wmt17")
    assert wmt.find(out, "wmt17") == out / "wmt17"


def test_wikitext2_prepare_checks_and_places_the_official_files(
    real_wikitext2: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert (
        main(["data", "prepare", "wikitext2", "--source", str(real_wikitext2), "--out", str(out)])
        == 0
    )
    assert wikitext2.ensure(out) == out / "wikitext2" / "wikitext-2"
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in wikitext2.FILES.values():
        shutil.copyfile(real_wikitext2 / name, bad / name)
    with open(bad / "wiki.valid.tokens", "ab") as fh:
        fh.write(b"x")
    line = _one_line_error(
        capsys,
        ["data", "prepare", "wikitext2", "--source", str(bad), "--out", str(tmp_path / "o2")],
    )
    assert "wiki.valid.tokens" in line


def test_gzip_inputs_and_plain_inputs_give_the_same_ids(real_wmt: Path, tmp_path: Path) -> None:
    src = _source(real_wmt, tmp_path)
    for lang in ("en", "de"):
        (src / f"val.{lang}").write_bytes(
            gzip.decompress((real_wmt / f"multi30k/val.{lang}.gz").read_bytes())
        )
    a = wmt_prepare.prepare("wmt16", src, tmp_path / "a", train=["val"], merges=100)
    b = wmt_prepare.prepare("wmt16", real_wmt, tmp_path / "b", train=["multi30k/val"], merges=100)
    ta, tb = wmt.load_prepared(a).train, wmt.load_prepared(b).train
    assert np.array_equal(ta.src.ids, tb.src.ids) and np.array_equal(ta.tgt.offsets, tb.tgt.offsets)
