"""WikiText-2 (word level, ``wikitext-2-v1``): the official ``wiki.{train,valid,test}.tokens``.

What the reference (AWD-LSTM's ``data.py``, used unchanged by the original MLBench) does, and so
what this does, because perplexity is only comparable over the same token ids:

* each file is read line by line as UTF-8 text; a line's words are ``line.split()`` (any
  whitespace) followed by one ``<eos>``, so an empty line (``' '`` in these files) is one token;
* the vocabulary is built over train, then valid, then test, in order of first appearance
  (``<eos>`` is id 0: the train file starts with an empty line). It has 33,278 types; train has
  2,088,628 tokens, valid 217,646, test 245,569.

The token streams are returned as numpy int64 arrays: this module runs in the launcher too
(``prepare_data``), which imports no torch. Batching into columns and BPTT windows lives in
:mod:`mlbench.data.bptt`.

The files are checked against the sha256 of the official files (recorded with the offline copy in
``../shared/data``, whose rebuilt train file has the official file's git blob id) before they are
tokenised: a vocabulary built from a corrupt or edited file would silently change every id after
the first difference, so a mismatch is a :class:`~mlbench.errors.DataError`, not a warning.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlbench.errors import DataError

SPLITS = ("train", "valid", "test")
FILES = {s: f"wiki.{s}.tokens" for s in SPLITS}
#: sha256 and size of the official files (``wikitext-2-v1.zip``, ``wikitext-2/`` folder)
SHA256 = {
    "train": "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f",
    "valid": "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
    "test": "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0",
}
SIZES = {"train": 10_797_148, "valid": 1_121_681, "test": 1_256_449}
TOKENS = {"train": 2_088_628, "valid": 217_646, "test": 245_569}
VOCAB_SIZE = 33_278
EOS = "<eos>"
DIRNAME = "wikitext-2"


@dataclass(frozen=True)
class Corpus:
    """The three token streams (int64 ids) and the id → word list they index."""

    words: tuple[str, ...]
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray

    @property
    def vocab_size(self) -> int:
        return len(self.words)

    def split(self, name: str) -> np.ndarray:
        if name not in SPLITS:
            raise ValueError(f"unknown WikiText-2 split {name!r} (one of {', '.join(SPLITS)})")
        stream: np.ndarray = getattr(self, name)
        return stream


def find(root: Path) -> Path | None:
    """The folder holding ``wiki.train.tokens`` under ``root``: ``root/wikitext2/wikitext-2``
    (what ``materialize.py`` and ``mlbench data prepare`` write), ``root/wikitext-2`` (the
    official zip extracted), or ``root`` itself."""
    for cand in (root / "wikitext2" / DIRNAME, root / DIRNAME, root):
        if (cand / FILES["train"]).is_file():
            return cand
    return None


def _read(path: Path, split: str, verify: bool) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"WikiText-2 file missing: {path}") from None
    except OSError as exc:
        raise DataError(f"WikiText-2 file {path} cannot be read: {exc}") from None
    if verify:
        got = hashlib.sha256(raw).hexdigest()
        if got != SHA256[split]:
            raise DataError(
                f"WikiText-2 file {path} is not the official {FILES[split]} "
                f"({len(raw)} bytes, sha256 {got[:12]}…; expected {SIZES[split]} bytes, "
                f"{SHA256[split][:12]}…): corrupt, truncated or edited"
            )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"WikiText-2 file {path} is not UTF-8 text ({exc})") from None


def _lines(text: str) -> list[str]:
    """Lines as Python's text-mode iteration gives them (universal newlines: ``\\n``, ``\\r\\n``
    and ``\\r`` end a line; a final newline does not start another line). Not ``splitlines()``:
    it also breaks at form feeds and U+2028, which ``for line in file`` does not."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def tokenize(texts: dict[str, str]) -> Corpus:
    """Ids for each split's text, the vocabulary grown over the splits in ``SPLITS`` order."""
    index: dict[str, int] = {}
    add = index.setdefault
    streams = {}
    for split in SPLITS:
        ids: list[int] = []
        extend = ids.extend
        for line in _lines(texts[split]):
            words = line.split()
            words.append(EOS)
            extend([add(w, len(index)) for w in words])
        streams[split] = np.array(ids, dtype=np.int64)
    return Corpus(tuple(index), streams["train"], streams["valid"], streams["test"])


def load(directory: Path, *, verify: bool = True) -> Corpus:
    """Read and tokenise the three files in ``directory``.

    ``verify=False`` skips the checksums (for files in the same format that are not the official
    ones: tests, a subset); the task then records the run as non-official.
    """
    texts = {s: _read(directory / FILES[s], s, verify) for s in SPLITS}
    return tokenize(texts)


def check(directory: Path) -> None:
    """The checksums only (the launcher's preflight): raises :class:`DataError` on a mismatch."""
    for split in SPLITS:
        path = directory / FILES[split]
        if not path.is_file():
            raise DataError(f"WikiText-2 file missing: {path}")
        if path.stat().st_size != SIZES[split]:
            raise DataError(
                f"WikiText-2 file {path} has {path.stat().st_size} bytes, not the official "
                f"{SIZES[split]}: corrupt, truncated or edited"
            )
        _read(path, split, verify=True)


def ensure(root: Path) -> Path:
    """Locate and check WikiText-2 under ``root``; returns the folder. There is no download:
    the official archive's home (an S3 bucket) is gone, so the files are put in place by hand."""
    directory = find(root)
    if directory is None:
        raise DataError(
            f"WikiText-2 not found under {root} (expected wikitext2/{DIRNAME}/, {DIRNAME}/ or "
            f"the files themselves: {', '.join(FILES.values())})"
        )
    check(directory)
    return directory


def prepare(source: Path, out: Path) -> Path:
    """``mlbench data prepare wikitext2``: check the official files found under ``source``
    (see :func:`find`) against the pinned sha256 and copy them to ``out/wikitext2/wikitext-2``,
    where :func:`ensure` finds them. The pinned checksums are the manifest: nothing else is
    written. Copies go through a temporary name, so a failed copy leaves no file behind."""
    import os
    import shutil

    found = find(source)
    if found is None:
        raise DataError(
            f"WikiText-2 not found under {source} (expected {', '.join(FILES.values())} there, "
            f"in {DIRNAME}/ or in wikitext2/{DIRNAME}/)"
        )
    check(found)
    target = out / "wikitext2" / DIRNAME
    target.mkdir(parents=True, exist_ok=True)
    for name in FILES.values():
        if (target / name).resolve() == (found / name).resolve():
            continue
        tmp = target / f".{name}.tmp"
        shutil.copyfile(found / name, tmp)
        os.replace(tmp, target / name)
    check(target)
    return target
