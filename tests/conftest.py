"""Shared fixtures: the real datasets, materialised once per session in their official layouts."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """Where ../shared/data lives: $MLBENCH_SHARED_DATA or beside the checkout."""
    candidates = [os.environ.get("MLBENCH_SHARED_DATA"), REPO.parent / "shared" / "data"]
    for cand in candidates:
        if cand and (Path(cand) / "materialize.py").is_file():
            return Path(cand)
    raise RuntimeError(
        "real datasets not found: set MLBENCH_SHARED_DATA to the folder holding materialize.py "
        "(the shared dataset folder, normally ../shared/data beside the checkout)"
    )


@pytest.fixture(scope="session")
def real_data() -> Path:
    """DEST of ``materialize.py``: DEST/cifar10/cifar-10-batches-py, DEST/libsvm/a9a, ..."""
    dest = Path(os.environ.get("MLBENCH_TEST_DATA", REPO / ".data"))
    marker = dest / ".materialized"
    if not marker.exists():
        dest.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                str(shared_data_dir() / "materialize.py"),
                str(dest),
                "--only",
                "cifar10,libsvm",
            ],
            check=True,
            capture_output=True,
        )
        marker.write_text("ok\n")
    _ensure_wikitext2(dest)
    _ensure_prepared_wmt(dest)
    _ensure_prepared_imagenet(dest)
    return dest


def _materialize(dest: Path, only: str, folder: Path, names: tuple[str, ...]) -> Path:
    """``folder`` once it holds ``names``: written on first use by ``materialize.py --only
    ONLY``. Checked by its files, not by ``real_data``'s marker: folders materialised before a
    dataset was used have the marker and not that dataset."""
    if not all((folder / n).is_file() for n in names):
        dest.mkdir(parents=True, exist_ok=True)
        script = str(shared_data_dir() / "materialize.py")
        subprocess.run(
            [sys.executable, script, str(dest), "--only", only], check=True, capture_output=True
        )
    return folder


def _ensure_wikitext2(dest: Path) -> Path:
    """DEST/wikitext2/wikitext-2 with the official ``wiki.{train,valid,test}.tokens`` (0.4 s:
    three xz files)."""
    names = ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens")
    return _materialize(dest, "wikitext2", dest / "wikitext2" / "wikitext-2", names)


@pytest.fixture(scope="session")
def real_wikitext2() -> Path:
    """The folder of the official WikiText-2 files (without materialising the other datasets)."""
    return _ensure_wikitext2(Path(os.environ.get("MLBENCH_TEST_DATA", REPO / ".data")))


def _ensure_wmt(dest: Path) -> Path:
    """DEST/wmt with ``newstest2014.{en,de}`` (the full 3003-sentence set, raw) and
    ``multi30k/{train,val,test_2016_flickr}.{en,de}.gz`` (real EN-DE pairs in the WMT file
    format: one sentence per line, aligned). No WMT training corpus is available offline: the
    preparation code is exercised on Multi30k."""
    names = ("newstest2014.en", "newstest2014.de", "multi30k/train.en.gz", "multi30k/val.de.gz")
    return _materialize(dest, "wmt", dest / "wmt", names)


@pytest.fixture(scope="session")
def real_wmt() -> Path:
    """The folder of the real WMT test set and Multi30k (see :func:`_ensure_wmt`)."""
    return _ensure_wmt(Path(os.environ.get("MLBENCH_TEST_DATA", REPO / ".data")))


def _ensure_prepared_wmt(dest: Path) -> None:
    """DEST/wmt16 and DEST/wmt17 as ``mlbench data prepare`` writes them, from real Multi30k
    (training) and newstest2014 (test) with 2,000-entry subword vocabularies: what the 4a/4b
    tests train on (~10 s, once per data folder; the manifest is written last, so a folder
    with one is complete)."""
    from mlbench.data import wmt_prepare

    source = _ensure_wmt(dest)
    for dataset, size in (("wmt16", {"merges": 2000}), ("wmt17", {"vocab_size": 2000})):
        if not (dest / dataset / "manifest.json").is_file():
            wmt_prepare.prepare(
                dataset, source, dest, train=["multi30k/train"], progress=lambda _: None, **size
            )


@pytest.fixture(scope="session")
def imagenet_tree(real_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A small ILSVRC2012 tree (flat val + devkit) of real photographs, with its oddities: see
    tests/support/imagenet_tree.py. Read-only for tests: copy it before changing files."""
    from .support.imagenet_tree import make_tree

    return make_tree(tmp_path_factory.mktemp("imagenet"), real_data)


@pytest.fixture(scope="session")
def imagenet_tree_folders(real_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The same, with the common ``val/nXXXXXXXX/`` re-layout and no devkit."""
    from .support.imagenet_tree import make_tree

    return make_tree(tmp_path_factory.mktemp("imagenet-folders"), real_data, val_layout="folders")


def _ensure_prepared_imagenet(dest: Path) -> None:
    """DEST/imagenet/manifest.json as ``mlbench data prepare imagenet`` writes it, over a small
    ILSVRC2012 tree of real CIFAR-10 photographs in DEST/imagenet-tree (10 classes, 120 train,
    30 val, flat val + devkit, with the oddities): what tasks 1b's tests run on (~2 s, once
    per data folder; the manifest is written last, so a folder with one is complete)."""
    from mlbench.data import imagenet

    if not (dest / imagenet.FOLDER / imagenet.MANIFEST).is_file():
        from .support.imagenet_tree import make_tree

        source = dest / "imagenet-tree"
        if source.exists():  # a half-written tree from an interrupted session
            import shutil

            shutil.rmtree(source)
        make_tree(source, dest, classes=10, train_per_class=12, val_per_class=3)
        imagenet.prepare(source, dest)


CHROMIUM = Path(os.environ.get("MLBENCH_CHROMIUM", "/usr/bin/chromium"))


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's headless Chromium under Playwright, one per session: Playwright's sync API
    cannot start a second instance while one is running (tests/browser and report tests share
    it)."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"Chromium not found at {CHROMIUM} (apt-get install chromium, or set MLBENCH_CHROMIUM)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-background-networking", "--disable-component-update"],
        )
        yield b
        b.close()


@pytest.fixture
def master(tmp_path: Path) -> Iterator[Any]:
    """A real ``mlbench serve`` without a scheduler (runs arrive by upload or ``mlbench
    import``), stopped after the test."""
    from .server.master import Master

    m = Master(tmp_path / "master-home", "--no-scheduler")
    m.start()
    yield m
    if m.proc and m.proc.poll() is None:
        m.proc.terminate()
        m.proc.wait(timeout=10)
