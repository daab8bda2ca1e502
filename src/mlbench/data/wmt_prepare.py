"""``mlbench data prepare wmt16|wmt17``: from the official statmt.org files to the layout
:mod:`mlbench.data.wmt` loads.

**wmt16** (task 4a) follows MLPerf's GNMT recipe (``rnn_translator/download_dataset.sh``):

1. Moses tokenisation of every file (``tokenizer.perl -l en|de``: default escaping, no
   aggressive hyphen splitting), here with sacremoses;
2. ``clean-corpus-n.perl ... 1 80`` on the training pairs: whitespace collapsed, pairs with an
   empty side, a side of more than 80 words, or a word ratio above 9 dropped;
3. MLPerf's ``filter_dataset.py``: pairs that latin-1 cannot encode dropped;
4. joint BPE learned with subword-nmt on the cleaned German then English lines (32,000 merges,
   min frequency 2), applied to the cleaned training pairs and the *uncleaned* tokenised test
   source (every one of the 3003 sentences is translated and scored);
5. vocabulary: PAD/UNK/BOS/EOS, then the BPE tokens of the English and German training lines by
   decreasing frequency (``get_vocab.py``), padded to a multiple of 8 with ``madeupwordNNNN``.

**wmt17** (task 4b): one sentencepiece unigram model (32,000 pieces, pad/unk/bos/eos = 0/1/2/3)
trained on the English and German training lines, raw text in, raw text out. The original used a
tensor2tensor subtokenizer (33,708 subtokens); sentencepiece is a recorded deviation. Pairs with an
empty side are dropped; length limits are the batcher's.

Both read the official training corpora by default (``OFFICIAL_TRAIN``) and the raw
``newstest2014.{en,de}`` (pinned by sha256: the test set decides every BLEU score). ``train=``
takes other pair files (``PREFIX.en``/``PREFIX.de``, optionally gzipped); the manifest then says
the corpus is not the official one and the task marks the run non-official.

Long stages (tokenising, BPE) can run in ``workers`` processes; progress goes to a callback the
CLI prints. Outputs are written to temporary names and renamed into place, the manifest last, so an
interrupted run never leaves a folder that passes :func:`mlbench.data.wmt.check`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import multiprocessing as mp
import os
import shutil
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from mlbench.data.wmt import (
    DATASETS,
    FORMAT,
    MANIFEST,
    SPECIALS,
    SRC_LANG,
    TEST,
    TGT_LANG,
    Ragged,
    sha256_file,
)
from mlbench.errors import ConfigError, DataError

Progress = Callable[[str], None]

#: the training corpora of each task, as the statmt.org tarballs name the extracted files
OFFICIAL_TRAIN = {
    "wmt16": ("europarl-v7.de-en", "commoncrawl.de-en", "news-commentary-v11.de-en"),
    "wmt17": ("europarl-v7.de-en", "commoncrawl.de-en", "news-commentary-v12.de-en"),
}
#: sha256 of the raw newstest2014 (full, 3003 lines) that MLPerf's references verify by md5
TEST_SHA256 = {
    "en": "7294bccf2879a97b3706b95c9595f1459617a8ee7130d5d8581c910e69736971",
    "de": "ae5d110486bc33d7175e9e28c7d0051eb3e5fcd2166dd93371089852c091a20e",
}
DEFAULT_MERGES = 32_000
DEFAULT_VOCAB = 32_000
CLEAN_MIN, CLEAN_MAX, CLEAN_RATIO = 1, 80, 9.0


# -- reading --------------------------------------------------------------------------------


class InputFile:
    """One input file read whole: its lines, and the facts the manifest records."""

    def __init__(self, path: Path, source: Path) -> None:
        self.path = path
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise DataError(f"input file missing: {path}") from None
        except OSError as exc:
            raise DataError(f"input file {path} cannot be read: {exc}") from None
        self.sha256 = hashlib.sha256(raw).hexdigest()
        self.bytes = len(raw)
        if path.name.endswith(".gz"):
            try:
                raw = gzip.decompress(raw)
            except (EOFError, OSError, zlib.error) as exc:
                raise DataError(f"{path} is not a complete gzip file ({exc})") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            raise DataError(f"{path} is not UTF-8 text (line {line}: {exc.reason})") from None
        # lines end at "\n" only, as Moses' perl scripts and `wc -l` count them
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        self.lines = lines
        try:
            self.name = str(path.relative_to(source))
        except ValueError:
            self.name = str(path)

    def record(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "bytes": self.bytes, "lines": len(self.lines)}


def _locate(source: Path, prefix: str, lang: str) -> Path:
    """``SOURCE/PREFIX.LANG`` (or ``.gz``); a bare corpus name is also searched for below
    ``SOURCE``, where the statmt.org tarballs extract it (``training-parallel-nc-v11/...``)."""
    names = (f"{prefix}.{lang}", f"{prefix}.{lang}.gz")
    for name in names:
        if (source / name).is_file():
            return source / name
    if "/" not in prefix:
        found = sorted(p for name in names for p in source.rglob(name) if p.is_file())
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            listed = ", ".join(str(p) for p in found)
            raise DataError(f"{prefix}.{lang} found more than once under {source}: {listed}")
    raise DataError(f"input file missing: {source / names[0]} (or {names[1]}, or below {source})")


def read_pair(source: Path, prefix: str) -> tuple[InputFile, InputFile]:
    """The aligned ``PREFIX.en`` / ``PREFIX.de``; differing line counts are an error."""
    en = InputFile(_locate(source, prefix, SRC_LANG), source)
    de = InputFile(_locate(source, prefix, TGT_LANG), source)
    if len(en.lines) != len(de.lines):
        raise DataError(
            f"{en.path} has {len(en.lines)} lines but {de.path} has {len(de.lines)}: "
            "the pair files are not aligned (truncated, or from different corpora)"
        )
    return en, de


# -- parallel map over lines (the slow stages) -----------------------------------------------

_WORKER: Callable[[str], Any] | None = None


def _make(kind: str, arg: Any) -> Callable[[str], Any]:
    if kind == "moses":
        from sacremoses import MosesTokenizer

        tok = MosesTokenizer(lang=arg)
        return lambda s: tok.tokenize(s, return_str=True, escape=True)
    if kind == "bpe":
        from subword_nmt.apply_bpe import BPE

        bpe = BPE(io.StringIO(arg))
        return lambda s: bpe.process_line(s).split()
    if kind == "spm":
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_proto=arg)
        return lambda s: sp.encode(s)
    raise AssertionError(kind)


def _init(kind: str, arg: Any) -> None:
    global _WORKER
    _WORKER = _make(kind, arg)


def _run(chunk: list[str]) -> list[Any]:
    assert _WORKER is not None
    return [_WORKER(s) for s in chunk]


def _map(kind: str, arg: Any, lines: list[str], workers: int) -> list[Any]:
    """``fn(line)`` for every line, in order; in ``workers`` processes when it pays."""
    chunk = 20_000
    if workers <= 1 or len(lines) < 2 * chunk:
        fn = _make(kind, arg)
        return [fn(s) for s in lines]
    chunks = [lines[i : i + chunk] for i in range(0, len(lines), chunk)]
    with mp.get_context("spawn").Pool(workers, _init, (kind, arg)) as pool:
        return [x for part in pool.imap(_run, chunks) for x in part]


# -- the MLPerf filters ----------------------------------------------------------------------


def clean_corpus(en: list[str], de: list[str]) -> tuple[list[str], list[str]]:
    """``clean-corpus-n.perl`` with min 1, max 80 and its default ratio 9 (word counts after
    whitespace is collapsed; the vertical bar, Moses' factor separator, cannot occur: the
    tokeniser escaped it)."""
    keep_en, keep_de = [], []
    for e, f in zip(en, de, strict=True):
        ew, fw = e.split(), f.split()
        ne, nf = len(ew), len(fw)
        if not (CLEAN_MIN <= ne <= CLEAN_MAX and CLEAN_MIN <= nf <= CLEAN_MAX):
            continue
        if ne / nf > CLEAN_RATIO or nf / ne > CLEAN_RATIO:
            continue
        keep_en.append(" ".join(ew))
        keep_de.append(" ".join(fw))
    return keep_en, keep_de


def latin1_filter(en: list[str], de: list[str]) -> tuple[list[str], list[str]]:
    """MLPerf's ``filter_dataset.py``: drop pairs with a character outside latin-1."""
    keep_en, keep_de = [], []
    for e, f in zip(en, de, strict=True):
        try:
            e.encode("latin-1")
            f.encode("latin-1")
        except UnicodeEncodeError:
            continue
        keep_en.append(e)
        keep_de.append(f)
    return keep_en, keep_de


def learn_bpe(lines: Iterable[str], merges: int) -> str:
    """Joint BPE codes (subword-nmt, min frequency 2) as the text of a codes file."""
    from subword_nmt.learn_bpe import learn_bpe as learn

    out = io.StringIO()
    learn(list(lines), out, merges, min_frequency=2)
    return out.getvalue()


def bpe_vocabulary(*sides: list[list[str]]) -> list[str]:
    """``get_vocab.py`` over the sides in order (by decreasing count, ties by first
    appearance), after the specials, padded to a multiple of 8 as MLPerf's tokenizer does."""
    counts: Counter[str] = Counter()
    for side in sides:
        for toks in side:
            counts.update(toks)
    tokens = list(SPECIALS) + [t for t, _ in sorted(counts.items(), key=lambda x: -x[1])]
    pad = -len(tokens) % 8
    return tokens + [f"madeupword{i:04d}" for i in range(pad)]


# -- writing ---------------------------------------------------------------------------------


class _Writer:
    """Files into ``directory``, each via a temporary name, recorded for the manifest."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        old = directory / MANIFEST
        if old.exists():
            old.unlink()  # a folder without a valid manifest is not loadable mid-way
        self.outputs: dict[str, dict[str, Any]] = {}

    def _done(self, name: str, tmp: Path) -> None:
        final = self.directory / name
        os.replace(tmp, final)
        self.outputs[name] = {"sha256": sha256_file(final), "bytes": final.stat().st_size}

    def bytes(self, name: str, data: bytes) -> None:
        tmp = self.directory / f".{name}.tmp"
        tmp.write_bytes(data)
        self._done(name, tmp)

    def copy(self, name: str, src: Path) -> None:
        tmp = self.directory / f".{name}.tmp"
        shutil.copyfile(src, tmp)
        self._done(name, tmp)

    def ragged(self, name: str, dtype: Any, **sides: list[list[int]]) -> None:
        arrays: dict[str, np.ndarray] = {}
        for side, seqs in sides.items():
            r = Ragged.from_lists(seqs, dtype)
            arrays[f"{side}_ids"], arrays[f"{side}_offsets"] = r.ids, r.offsets
        tmp = self.directory / f".{name}.tmp"
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]
        self._done(name, tmp)

    def manifest(self, manifest: dict[str, Any]) -> None:
        manifest["outputs"] = self.outputs
        tmp = self.directory / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, self.directory / MANIFEST)


def _id_dtype(vocab_size: int) -> Any:
    return np.uint16 if vocab_size <= 1 << 16 else np.int32


# -- the pipelines ---------------------------------------------------------------------------


def prepare(
    dataset: str,
    source: Path,
    out: Path,
    *,
    train: list[str] | None = None,
    merges: int = DEFAULT_MERGES,
    vocab_size: int = DEFAULT_VOCAB,
    workers: int = 1,
    progress: Progress | None = None,
) -> Path:
    """Prepare ``dataset`` from the files in ``source`` into ``out/DATASET``; returns that
    folder. Every input problem is a :class:`DataError` raised before anything is written."""
    if dataset not in DATASETS:
        raise ConfigError(f"unknown WMT dataset {dataset!r} (one of {', '.join(DATASETS)})")
    if merges < 1 or vocab_size < 16:
        raise ConfigError("--merges must be at least 1 and --vocab-size at least 16")
    say = progress or (lambda _msg: None)
    t0 = time.monotonic()
    official_corpus = train is None
    prefixes = list(OFFICIAL_TRAIN[dataset]) if train is None else list(train)
    inputs: dict[str, dict[str, Any]] = {}
    train_en: list[str] = []
    train_de: list[str] = []
    for prefix in prefixes:
        en, de = read_pair(source, prefix)
        inputs[en.name], inputs[de.name] = en.record(), de.record()
        train_en += en.lines
        train_de += de.lines
        say(f"read {prefix}: {len(en.lines):,} pairs")
    test_en, test_de = read_pair(source, TEST)
    inputs[test_en.name], inputs[test_de.name] = test_en.record(), test_de.record()
    official_test = all(
        f.sha256 == TEST_SHA256[lang] for f, lang in ((test_en, "en"), (test_de, "de"))
    )
    if not official_test:
        raise DataError(
            f"{test_en.path} / {test_de.path} are not the official raw newstest2014 (full, 3003 "
            "sentences; sha256 differs): BLEU would not be comparable. Extract them with "
            "`sacrebleu -t wmt14/full -l en-de --echo src|ref`"
        )
    say(f"read {TEST}: {len(test_en.lines):,} pairs (official, sha256 ok)")
    counts: dict[str, int] = {"train_pairs_read": len(train_en), "test": len(test_en.lines)}
    directory = out / dataset
    writer = _Writer(directory)
    if dataset == "wmt16":
        settings, vocab_len = _wmt16(
            train_en, train_de, test_en.lines, merges, workers, counts, writer, say
        )
    else:
        settings, vocab_len = _wmt17(
            train_en, train_de, test_en.lines, vocab_size, workers, counts, writer, say
        )
    writer.copy(f"{TEST}.{SRC_LANG}", test_en.path)
    writer.copy(f"{TEST}.{TGT_LANG}", test_de.path)
    reasons = [] if official_corpus else [f"training corpus {', '.join(prefixes)}"]
    default = merges == DEFAULT_MERGES if dataset == "wmt16" else vocab_size == DEFAULT_VOCAB
    if not default:
        reasons.append("subword vocabulary size differs from the recipe's 32,000")
    writer.manifest(
        {
            "format": FORMAT,
            "dataset": dataset,
            "official": not reasons,
            "nonofficial_reasons": reasons,
            "train_corpora": prefixes,
            "inputs": inputs,
            "counts": counts,
            "vocab_size": vocab_len,
            "settings": settings,
            "seconds": round(time.monotonic() - t0, 1),
        }
    )
    say(f"wrote {directory} ({time.monotonic() - t0:.1f} s)")
    return directory


def _wmt16(
    en: list[str],
    de: list[str],
    test_en: list[str],
    merges: int,
    workers: int,
    counts: dict[str, int],
    writer: _Writer,
    say: Progress,
) -> tuple[dict[str, Any], int]:
    t = time.monotonic()
    tok_en = _map("moses", SRC_LANG, en, workers)
    tok_de = _map("moses", TGT_LANG, de, workers)
    tok_test = _map("moses", SRC_LANG, test_en, workers)
    say(f"moses-tokenised {len(en) * 2 + len(test_en):,} lines ({time.monotonic() - t:.1f} s)")
    tok_en, tok_de = clean_corpus(tok_en, tok_de)
    counts["after_clean"] = len(tok_en)
    say(f"clean-corpus {CLEAN_MIN}-{CLEAN_MAX}, ratio {CLEAN_RATIO:g}: kept {len(tok_en):,}")
    tok_en, tok_de = latin1_filter(tok_en, tok_de)
    counts["after_latin1"] = counts["train_pairs"] = len(tok_en)
    say(f"latin-1 filter: kept {len(tok_en):,} pairs")
    if not tok_en:
        raise DataError("no training pair is left after cleaning: check the --train files")
    t = time.monotonic()
    codes = learn_bpe(tok_de + tok_en, merges)  # MLPerf: cat train.de train.en | learn_bpe
    say(f"learned BPE: {merges:,} merges requested ({time.monotonic() - t:.1f} s)")
    t = time.monotonic()
    bpe_en = _map("bpe", codes, tok_en, workers)
    bpe_de = _map("bpe", codes, tok_de, workers)
    bpe_test = _map("bpe", codes, tok_test, workers)
    say(f"applied BPE to {len(bpe_en) * 2 + len(bpe_test):,} lines ({time.monotonic() - t:.1f} s)")
    tokens = bpe_vocabulary(bpe_en, bpe_de)
    index = {tok: i for i, tok in enumerate(tokens)}
    say(f"vocabulary: {len(tokens):,} tokens (a multiple of 8, specials 0-3)")
    dtype = _id_dtype(len(tokens))

    def ids(side: list[list[str]]) -> list[list[int]]:
        return [[index.get(t, 1) for t in toks] for toks in side]

    writer.bytes("vocab.txt", ("\n".join(tokens) + "\n").encode("utf-8"))
    writer.bytes("bpe.codes", codes.encode("utf-8"))
    writer.ragged("train.npz", dtype, src=ids(bpe_en), tgt=ids(bpe_de))
    writer.ragged("test.npz", dtype, src=ids(bpe_test))
    say(f"wrote {len(bpe_en):,} training pairs and {len(bpe_test):,} test sentences")
    settings = {
        "tokenizer": "sacremoses MosesTokenizer(escape=True), lang en/de",
        "clean": {"min": CLEAN_MIN, "max": CLEAN_MAX, "ratio": CLEAN_RATIO},
        "latin1_filter": True,
        "subword": "subword-nmt joint BPE (de+en), min frequency 2",
        "merges": merges,
    }
    return settings, len(tokens)


def _wmt17(
    en: list[str],
    de: list[str],
    test_en: list[str],
    vocab_size: int,
    workers: int,
    counts: dict[str, int],
    writer: _Writer,
    say: Progress,
) -> tuple[dict[str, Any], int]:
    import sentencepiece as spm

    pairs = [(e, d) for e, d in zip(en, de, strict=True) if e.strip() and d.strip()]
    en = [e for e, _ in pairs]
    de = [d for _, d in pairs]
    counts["train_pairs"] = len(en)
    say(f"dropped pairs with an empty side: kept {len(en):,}")
    if not en:
        raise DataError("no training pair is left: check the --train files")
    t = time.monotonic()
    model = io.BytesIO()
    spm.set_random_generator_seed(43)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(en + de),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=1.0,
        pad_id=0,
        unk_id=1,
        bos_id=2,
        eos_id=3,
        pad_piece=SPECIALS[0],
        unk_piece=SPECIALS[1],
        bos_piece=SPECIALS[2],
        eos_piece=SPECIALS[3],
        input_sentence_size=5_000_000,
        shuffle_input_sentence=True,
        num_threads=max(1, workers),
        minloglevel=2,
    )
    proto = model.getvalue()
    sp = spm.SentencePieceProcessor(model_proto=proto)
    tokens = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    say(f"trained sentencepiece: {len(tokens):,} pieces ({time.monotonic() - t:.1f} s)")
    t = time.monotonic()
    src = _map("spm", proto, en, workers)
    tgt = _map("spm", proto, de, workers)
    test = _map("spm", proto, test_en, workers)
    say(f"encoded {len(src) * 2 + len(test):,} lines ({time.monotonic() - t:.1f} s)")
    dtype = _id_dtype(len(tokens))
    writer.bytes("vocab.txt", ("\n".join(tokens) + "\n").encode("utf-8"))
    writer.bytes("spm.model", proto)
    writer.ragged("train.npz", dtype, src=src, tgt=tgt)
    writer.ragged("test.npz", dtype, src=test)
    say(f"wrote {len(src):,} training pairs and {len(test):,} test sentences")
    settings = {
        "tokenizer": "sentencepiece unigram, shared en+de, character coverage 1.0, raw text",
        "vocab_size": vocab_size,
        "deviation": "the original used a tensor2tensor subtokenizer (33,708 subtokens)",
    }
    return settings, len(tokens)
