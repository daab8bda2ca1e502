"""Prepared WMT EN→DE data (tasks 4a ``wmt16-gnmt``, 4b ``wmt17-transformer``): the on-disk
layout, its manifest, and loading it back.

``mlbench data prepare wmt16|wmt17`` (:mod:`mlbench.data.wmt_prepare`) writes one folder,
``OUT/wmt16`` or ``OUT/wmt17``:

* ``manifest.json`` — what was read (every input file's sha256, size and line count), how it was
  processed (tokeniser, merges or vocabulary size, filters and the pair counts each kept), whether
  the corpus is the official one, and the sha256 and size of every file below;
* ``train.npz`` / ``test.npz`` — token ids as *ragged arrays*: one flat id array and one offsets
  array per side (``src_ids``, ``src_offsets``, ``tgt_ids``, ``tgt_offsets``; ``test.npz`` has
  the source side only). Four arrays load in one read each, so a few million pairs load in well
  under a second, where a list of lists would take minutes and gigabytes;
* ``vocab.txt`` (one token a line, the id is the line number; PAD/UNK/BOS/EOS = 0/1/2/3) plus the
  subword model (``bpe.codes`` or ``spm.model``), so raw text can be encoded and hypotheses decoded;
* ``newstest2014.en`` / ``newstest2014.de`` — the raw test source and references, copied
  byte for byte: BLEU is scored against the untokenised reference, as MLPerf does.

Why the manifest is verified at load: ids are meaningless without the exact vocabulary they were
made with, and a half-written or edited ``train.npz`` would train silently on garbage. So every
output's sha256 is checked (:func:`check`, cheap enough for the launcher's preflight, which runs
before any worker starts), and a mismatch is a one-line :class:`~mlbench.errors.DataError`.

This module imports numpy only (the launcher runs it and imports no torch); the subword libraries
are imported when a vocabulary first encodes or decodes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from mlbench.errors import DataError

PAD, UNK, BOS, EOS = 0, 1, 2, 3
#: the special tokens' strings, as MLPerf's GNMT vocabulary writes them
SPECIALS = ("<pad>", "<unk>", "<s>", "<\\s>")
DATASETS = ("wmt16", "wmt17")
MANIFEST = "manifest.json"
FORMAT = 1
SRC_LANG, TGT_LANG = "en", "de"
TEST = "newstest2014"


@dataclass(frozen=True)
class Ragged:
    """Variable-length id sequences as one flat array and ``len + 1`` offsets: sentence ``i`` is
    ``ids[offsets[i]:offsets[i + 1]]``."""

    ids: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_lists(cls, seqs: list[list[int]], dtype: Any = np.int32) -> Ragged:
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
        offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.fromiter((i for s in seqs for i in s), dtype=dtype, count=int(offsets[-1]))
        return cls(flat, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i] : self.offsets[i + 1]]

    @cached_property
    def lengths(self) -> np.ndarray:
        """Computed once: the batchers index it for every batch."""
        return np.diff(self.offsets)

    def tolist(self, i: int) -> list[int]:
        return [int(x) for x in self[i]]


@dataclass(frozen=True)
class Pairs:
    """Aligned source/target id sequences (no BOS/EOS: the batchers add them)."""

    src: Ragged
    tgt: Ragged

    def __post_init__(self) -> None:
        assert len(self.src) == len(self.tgt), "source and target differ in length"

    def __len__(self) -> int:
        return len(self.src)


class Vocab:
    """Ids ↔ text for one prepared dataset: ``encode`` runs the whole source-side pipeline on
    raw English text, ``decode`` turns target ids back into plain German text (what BLEU
    scores). Subclasses hold the subword model; ``tokens`` is the id → string table."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.index = {t: i for i, t in enumerate(tokens)}

    @property
    def size(self) -> int:
        """Rows of the embedding: a multiple of 8 (tensor-core friendly, as MLPerf pads)."""
        return -(-len(self.tokens) // 8) * 8

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: list[int]) -> str:
        raise NotImplementedError

    def encode_target(self, text: str) -> list[int]:
        """Raw German text as target ids (the test references, for a teacher-forced loss)."""
        raise NotImplementedError


class BpeVocab(Vocab):
    """Moses tokenisation + joint subword-nmt BPE (task 4a, MLPerf's GNMT recipe)."""

    def __init__(self, tokens: list[str], codes: Path) -> None:
        super().__init__(tokens)
        self.codes = codes
        self._bpe: Any = None
        self._tok: Any = None
        self._tok_tgt: Any = None
        self._detok: Any = None

    def segment(self, tokenized: str) -> list[str]:
        """BPE tokens of an already Moses-tokenised line."""
        if self._bpe is None:
            from subword_nmt.apply_bpe import BPE

            with open(self.codes, encoding="utf-8") as fh:
                self._bpe = BPE(fh)
        segmented: str = self._bpe.process_line(tokenized)
        return segmented.split()

    def ids(self, tokens: list[str]) -> list[int]:
        get = self.index.get
        return [get(t, UNK) for t in tokens]

    def encode(self, text: str) -> list[int]:
        if self._tok is None:
            from sacremoses import MosesTokenizer

            self._tok = MosesTokenizer(lang=SRC_LANG)
        return self.ids(self.segment(self._tok.tokenize(text, return_str=True, escape=True)))

    def encode_target(self, text: str) -> list[int]:
        if self._tok_tgt is None:
            from sacremoses import MosesTokenizer

            self._tok_tgt = MosesTokenizer(lang=TGT_LANG)
        tokenized = self._tok_tgt.tokenize(text, return_str=True, escape=True)
        return self.ids(self.segment(tokenized))

    def decode(self, ids: list[int]) -> str:
        """Drop specials, undo BPE (``"@@ "``), Moses-detokenise (which also unescapes the
        ``&amp;``-style entities the tokeniser wrote)."""
        if self._detok is None:
            from sacremoses import MosesDetokenizer

            self._detok = MosesDetokenizer(lang=TGT_LANG)
        words = [self.tokens[i] for i in ids if 3 < i < len(self.tokens)]
        text = " ".join(words).replace("@@ ", "")
        if text.endswith("@@"):
            text = text[:-2]
        detok: str = self._detok.detokenize(text.split())
        return detok


class SpmVocab(Vocab):
    """One shared sentencepiece model over raw text (task 4b; the original used a
    tensor2tensor subtokenizer — a recorded deviation)."""

    def __init__(self, tokens: list[str], model: Path) -> None:
        super().__init__(tokens)
        self.model = model
        self._sp: Any = None

    @property
    def processor(self) -> Any:
        if self._sp is None:
            import sentencepiece as spm

            self._sp = spm.SentencePieceProcessor(model_file=str(self.model))
        return self._sp

    def encode(self, text: str) -> list[int]:
        ids: list[int] = self.processor.encode(text)
        return ids

    def encode_target(self, text: str) -> list[int]:
        return self.encode(text)  # one model for both languages

    def decode(self, ids: list[int]) -> str:
        text: str = self.processor.decode([int(i) for i in ids if 3 < i < len(self.tokens)])
        return text


@dataclass(frozen=True)
class Prepared:
    """A loaded prepared folder (:func:`load_prepared`)."""

    directory: Path
    manifest: dict[str, Any]
    vocab: Vocab
    train: Pairs
    test_src: Ragged
    test_refs: list[str]

    @property
    def official(self) -> bool:
        return bool(self.manifest["official"])


def sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def find(root: Path, dataset: str) -> Path | None:
    """The prepared folder under ``root``: ``root/DATASET`` (what ``prepare`` writes) or
    ``root`` itself when it holds a manifest of that dataset."""
    for cand in (root / dataset, root):
        if (cand / MANIFEST).is_file():
            return cand
    return None


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(
            f"no {MANIFEST} in {directory}: not a prepared WMT folder "
            "(run `mlbench data prepare wmt16|wmt17 --source DIR --out DIR`)"
        ) from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} cannot be read as JSON ({exc}): prepare again") from None
    if manifest.get("format") != FORMAT or manifest.get("dataset") not in DATASETS:
        raise DataError(
            f"{path} is not a format-{FORMAT} WMT manifest (format {manifest.get('format')!r}, "
            f"dataset {manifest.get('dataset')!r}): prepare again with this mlbench"
        )
    return manifest


def check(directory: Path, dataset: str | None = None) -> dict[str, Any]:
    """Verify a prepared folder against its manifest (every output's size and sha256); returns
    the manifest. The launcher's preflight: one :class:`DataError` line on any mismatch."""
    manifest = read_manifest(directory)
    if dataset is not None and manifest["dataset"] != dataset:
        raise DataError(
            f"{directory} holds prepared {manifest['dataset']}, not {dataset}: prepare {dataset}"
        )
    for name, entry in manifest["outputs"].items():
        path = directory / name
        if not path.is_file():
            raise DataError(f"prepared file missing: {path} (listed in {MANIFEST})")
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise DataError(
                f"prepared file {path} has {size} bytes, the manifest says {entry['bytes']}: "
                "truncated or edited, prepare again"
            )
        got = sha256_file(path)
        if got != entry["sha256"]:
            raise DataError(
                f"prepared file {path} does not match its manifest (sha256 {got[:12]}…, "
                f"expected {entry['sha256'][:12]}…): corrupt or edited, prepare again"
            )
    return manifest


def _npz(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in keys}
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path} cannot be read ({exc}): prepare again") from None


def load_vocab(directory: Path, manifest: dict[str, Any]) -> Vocab:
    try:
        tokens = (directory / "vocab.txt").read_text(encoding="utf-8").split("\n")
    except OSError as exc:
        raise DataError(
            f"{directory / 'vocab.txt'} cannot be read ({exc}): prepare again"
        ) from None
    if tokens and tokens[-1] == "":
        tokens.pop()
    if tuple(tokens[:4]) != SPECIALS:
        raise DataError(f"{directory / 'vocab.txt'} does not start with {', '.join(SPECIALS)}")
    if manifest["dataset"] == "wmt16":
        return BpeVocab(tokens, directory / "bpe.codes")
    return SpmVocab(tokens, directory / "spm.model")


def load_prepared(directory: Path, *, verify: bool = True) -> Prepared:
    """Load a prepared folder (``OUT/wmt16`` or ``OUT/wmt17``), verifying the manifest first
    unless ``verify=False`` (a worker whose launcher already ran :func:`check`)."""
    manifest = check(directory) if verify else read_manifest(directory)
    train = _npz(directory / "train.npz", ("src_ids", "src_offsets", "tgt_ids", "tgt_offsets"))
    test = _npz(directory / "test.npz", ("src_ids", "src_offsets"))
    refs_path = directory / f"{TEST}.{TGT_LANG}"
    try:
        refs = refs_path.read_text(encoding="utf-8").split("\n")
    except OSError as exc:
        raise DataError(f"{refs_path} cannot be read ({exc}): prepare again") from None
    if refs and refs[-1] == "":
        refs.pop()
    test_src = Ragged(test["src_ids"], test["src_offsets"])
    if len(refs) != len(test_src):
        raise DataError(f"{refs_path} has {len(refs)} lines but test.npz {len(test_src)} sentences")
    return Prepared(
        directory=directory,
        manifest=manifest,
        vocab=load_vocab(directory, manifest),
        train=Pairs(
            Ragged(train["src_ids"], train["src_offsets"]),
            Ragged(train["tgt_ids"], train["tgt_offsets"]),
        ),
        test_src=test_src,
        test_refs=refs,
    )
