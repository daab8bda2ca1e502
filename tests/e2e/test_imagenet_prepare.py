"""``mlbench data prepare imagenet`` as a user runs it: a subprocess on the small ILSVRC2012 tree
of real photographs, once on a good tree and once on a tree whose devkit does not match val/."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from mlbench.data import imagenet

from .helpers import mlbench


def test_prepare_imagenet_writes_a_manifest_that_loads(imagenet_tree: Any, tmp_path: Path) -> None:
    out = tmp_path / "data"
    args = ["data", "prepare", "imagenet", "--source", str(imagenet_tree.root), "--out", str(out)]
    proc = mlbench(*args, "--workers", "2", home=tmp_path / "home", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{out / 'imagenet' / 'manifest.json'}: 5 classes, 40 train")
    assert "4 odd files" in proc.stdout and "NOT official" in proc.stdout
    assert "hashed and decoded 60 / 60 images" in proc.stderr  # a line per stage on stderr
    index = imagenet.load(out)
    assert list(index.val) == imagenet_tree.val and sorted(index.train) == imagenet_tree.train


def test_prepare_imagenet_fails_in_one_line_and_writes_nothing(
    imagenet_tree: Any, tmp_path: Path
) -> None:
    source = Path(shutil.copytree(imagenet_tree.root, tmp_path / "src"))
    (source / "val" / "ILSVRC2012_val_00000020.JPEG").unlink()  # 19 images, 20 label lines
    out = tmp_path / "data"
    args = ["data", "prepare", "imagenet", "--source", str(source), "--out", str(out)]
    proc = mlbench(*args, home=tmp_path / "home", timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        f"mlbench: error: {source / imagenet.DEVKIT / 'data' / imagenet.GROUND_TRUTH} has 20 "
        "lines but val/ holds 19 images: one line per val image (an incomplete val/ or another "
        "year's devkit)"
    ]
    assert proc.stdout == "" and not out.exists()
