"""The ILSVRC2012 format (``mlbench.data.imagenet``) on a small tree of real photographs
(``tests/support/imagenet_tree.py``): labels in both val layouts, the oddities, the manifest, and
a one-line error for each way a real copy of the set goes wrong."""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest

from mlbench.cli.main import main
from mlbench.data import imagenet
from mlbench.data.decode import decode_file
from mlbench.errors import DataError

GT = f"{imagenet.DEVKIT}/data/{imagenet.GROUND_TRUTH}"
META = f"{imagenet.DEVKIT}/data/{imagenet.META}"


def _copy(tree: Any, tmp_path: Path, name: str = "src") -> Path:
    """A private copy of a session fixture's tree (they are shared: never change them)."""
    return Path(shutil.copytree(tree.root, tmp_path / name))


def _error(source: Path, match: str) -> str:
    with pytest.raises(DataError, match=match) as exc:
        imagenet.scan(source)
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_flat_val_is_labelled_through_the_devkit_not_sorted_order(imagenet_tree: Any) -> None:
    tree = imagenet_tree
    # the fixture is discriminating: a reader mapping ids through sorted-WNID order gets some
    # val labels wrong (what this test would then catch)
    assert any(tree.ilsvrc_ids[tree.wnids[label]] != label + 1 for _, label in tree.val)
    index = imagenet.scan(tree.root)
    assert index.source == tree.root.absolute()
    assert index.wnids == tuple(tree.wnids) == tuple(sorted(tree.wnids))
    assert index.val_layout == "flat"
    assert sorted(index.train) == sorted(tree.train)
    assert list(index.val) == tree.val  # in image-number order
    assert index.counts == (5, 40, 20) and not index.official and index.ignored == ()
    paths, labels = index.files("val")
    assert labels == [label for _, label in tree.val]
    assert paths == [str(tree.root / rel) for rel, _ in tree.val]
    assert all(os.path.isfile(p) for p in paths)
    with pytest.raises(ValueError, match="split"):
        index.files("test")


def test_val_folders_layout_needs_no_devkit(imagenet_tree_folders: Any) -> None:
    tree = imagenet_tree_folders
    assert not tree.devkit.exists()
    index = imagenet.scan(tree.root)
    assert index.val_layout == "folders"
    assert sorted(index.train) == sorted(tree.train)
    assert list(index.val) == tree.val  # the same order as the flat layout: by file name
    assert index.files("train")[1] == [label for _, label in index.train]


def test_the_devkit_tarball_is_read_in_place(imagenet_tree: Any, tmp_path: Path) -> None:
    source = _copy(imagenet_tree, tmp_path)
    with tarfile.open(source / f"{imagenet.DEVKIT}.tar.gz", "w:gz") as tar:
        tar.add(source / imagenet.DEVKIT, arcname=imagenet.DEVKIT)
    shutil.rmtree(source / imagenet.DEVKIT)
    index = imagenet.scan(source)
    assert list(index.val) == imagenet_tree.val
    assert not (source / imagenet.DEVKIT).exists()  # nothing extracted to disk
    # a tarball without the ground truth is not the devkit
    (source / f"{imagenet.DEVKIT}.tar.gz").unlink()
    with tarfile.open(source / f"{imagenet.DEVKIT}.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "src" / "train", arcname=f"{imagenet.DEVKIT}/data")
    _error(source, "lacks .*ILSVRC2012_validation_ground_truth.txt")


def test_oddities_are_indexed_decoded_and_recorded(imagenet_tree: Any, tmp_path: Path) -> None:
    tree = imagenet_tree
    index = imagenet.scan(tree.root)
    listed = {rel for rel, _ in (*index.train, *index.val)}
    for rel in tree.odd.values():
        assert rel in listed
        pixels = decode_file(tree.root / rel)
        assert pixels.ndim == 3 and pixels.shape[2] == 3 and pixels.shape[0] >= 48
    assert (tree.root / tree.odd["png"]).read_bytes().startswith(b"\x89PNG")
    manifest = imagenet.prepare(tree.root, tmp_path / "out")
    expected = {"gray": "gray", "cmyk": "cmyk", "png": "png", "val-cmyk": "cmyk"}
    assert manifest["odd"] == {tree.odd[k]: kind for k, kind in expected.items()}


def test_prepare_then_load_round_trip(imagenet_tree: Any, tmp_path: Path) -> None:
    tree = imagenet_tree
    out = tmp_path / "data"
    lines: list[str] = []
    header = imagenet.prepare(tree.root, out, workers=2, progress=lines.append)
    assert lines[0].startswith(f"scanned {tree.root}: 5 classes, 40 train and 20 val images")
    assert "hashed and decoded 60 / 60 images" in lines[-2]
    assert lines[-1].startswith(f"wrote {out / 'imagenet' / 'manifest.json'}")
    assert header["counts"] == {"classes": 5, "train": 40, "val": 20}
    assert header["official"] is False
    assert "ILSVRC2012 has 1,000" in header["nonofficial_reasons"][0]
    assert (
        header["devkit"]["meta.mat"] == hashlib.sha256((tree.root / META).read_bytes()).hexdigest()
    )
    loaded = imagenet.load(out)
    assert loaded == imagenet.scan(tree.root)
    assert loaded.manifest == header
    assert loaded.files("val")[1] == [label for _, label in tree.val]
    # every file's size and sha256, in index order
    raw = imagenet.read_manifest(out / "imagenet" / "manifest.json")
    for split, pairs in (("train", loaded.train), ("val", loaded.val)):
        assert raw[split]["paths"] == [rel for rel, _ in pairs]
        for i in (0, len(pairs) - 1):
            data = (tree.root / pairs[i][0]).read_bytes()
            assert raw[split]["bytes"][i] == len(data)
            assert raw[split]["sha256"][i] == hashlib.sha256(data).hexdigest()
    assert not list((out / "imagenet").glob(".*"))  # no temporary file left


def test_a_rerun_keeps_a_matching_manifest_and_redoes_a_changed_tree(
    imagenet_tree: Any, tmp_path: Path
) -> None:
    source = _copy(imagenet_tree, tmp_path)
    out = tmp_path / "data"
    first = imagenet.prepare(source, out)
    path = out / "imagenet" / "manifest.json"
    written = path.stat().st_mtime_ns
    old_sha = imagenet.read_manifest(path)["train"]["sha256"]
    lines: list[str] = []
    assert imagenet.prepare(source, out, progress=lines.append) == first
    assert "is up to date" in lines[-1] and path.stat().st_mtime_ns == written
    # one image replaced by another (valid) photograph: re-read, the new checksum recorded
    rel = imagenet_tree.train[5][0]
    shutil.copyfile(source / imagenet_tree.train[6][0], source / rel)
    lines.clear()
    imagenet.prepare(source, out, progress=lines.append)
    assert any("hashed and decoded 60 / 60" in line for line in lines)
    raw = imagenet.read_manifest(path)
    assert raw["train"]["sha256"][5] == raw["train"]["sha256"][6] == old_sha[6] != old_sha[5]
    assert raw["stamp"] != first["stamp"]
    lines.clear()
    imagenet.prepare(source, out, progress=lines.append, force=True)
    assert any("hashed and decoded" in line for line in lines)


@pytest.mark.parametrize("damage", ["truncated", "not an image"])
def test_an_unreadable_image_is_named_and_nothing_is_written(
    imagenet_tree: Any, tmp_path: Path, damage: str
) -> None:
    source = _copy(imagenet_tree, tmp_path)
    out = tmp_path / "data"
    imagenet.prepare(source, out)  # a manifest of the intact tree, made stale below
    rel = imagenet_tree.val[7][0]
    data = (source / rel).read_bytes()
    (source / rel).write_bytes(data[: len(data) // 2] if damage == "truncated" else b"<html>")
    with pytest.raises(DataError, match=rf"cannot decode image .*{rel}") as exc:
        imagenet.prepare(source, out, workers=2)
    assert "\n" not in str(exc.value)
    assert list((out / "imagenet").iterdir()) == []  # the stale manifest is gone, nothing new


def test_other_files_are_ignored_and_any_jpeg_extension_is_an_image(
    imagenet_tree: Any, tmp_path: Path
) -> None:
    source = _copy(imagenet_tree, tmp_path)
    wnid = imagenet_tree.wnids[1]
    (source / "train" / f"{wnid}.tar").write_bytes(b"a class tar left after extraction")
    (source / "train" / wnid / ".DS_Store").write_bytes(b"\0")
    (source / "train" / wnid / f"._{wnid}_1.JPEG").write_bytes(b"\0\5")  # macOS metadata
    (source / "train" / wnid / "notes.txt").write_text("x")
    shutil.copyfile(source / imagenet_tree.train[9][0], source / "train" / wnid / "extra.jpg")
    index = imagenet.scan(source)
    assert (f"train/{wnid}/extra.jpg", 1) in index.train and len(index.train) == 41
    assert sorted(index.ignored) == sorted(
        [
            f"train/{wnid}.tar",
            f"train/{wnid}/.DS_Store",
            f"train/{wnid}/._{wnid}_1.JPEG",
            f"train/{wnid}/notes.txt",
        ]
    )
    assert imagenet.prepare(source, tmp_path / "out")["ignored"]["count"] == 4


def _drop_last_gt_line(s: Path) -> None:
    lines = (s / GT).read_text().splitlines(keepends=True)
    (s / GT).write_text("".join(lines[:-1]))


def _gt_line_one(value: str) -> Any:
    def edit(s: Path) -> None:
        lines = (s / GT).read_text().splitlines(keepends=True)
        (s / GT).write_text("".join([f"{value}\n", *lines[1:]]))

    return edit


def _extra_train_class(s: Path) -> None:
    (s / "train" / "n01514668").mkdir()
    shutil.copyfile(next((s / "train" / "n01440764").iterdir()), s / "train/n01514668/a.JPEG")


FLAT_ERRORS = {
    "no train/": (lambda s: shutil.rmtree(s / "train"), r"train is missing"),
    "no val/": (lambda s: shutil.rmtree(s / "val"), r"val is missing"),
    "no devkit": (lambda s: shutil.rmtree(s / imagenet.DEVKIT), r"no devkit to label it"),
    "ground truth one line short": (
        _drop_last_gt_line,
        r"ground_truth.txt has 19 lines but val/ holds 20 images",
    ),
    # id 6 is the inner node planted in meta.mat: a reader keeping inner nodes would accept it
    "an inner-node id": (_gt_line_one("6"), r"line 1: ILSVRC2012_ID 6 is not a leaf synset"),
    "an unknown id": (_gt_line_one("1001"), r"line 1: ILSVRC2012_ID 1001 is not a leaf"),
    "not a number": (_gt_line_one("kit fox"), r"line 1 is 'kit fox', not an ILSVRC2012_ID"),
    "meta.mat unreadable": (
        lambda s: (s / META).write_bytes(b"MATLAB 5.0 MAT-file, cut short"),
        r"meta.mat is not the devkit's meta.mat",
    ),
    "an empty class": (
        lambda s: [p.unlink() for p in (s / "train" / "n01443537").iterdir()],
        r"train/n01443537 holds no images",
    ),
    "a class meta.mat lacks": (_extra_train_class, r"classes differ: train/ has 6 WNIDs.*5"),
    "a folder that is no WNID": (
        lambda s: (s / "train" / "n01440764_extra").mkdir(),
        r"train/n01440764_extra is not a class folder",
    ),
    "val misnamed": (
        lambda s: (s / "val" / "ILSVRC2012_val_00000004.JPEG").rename(s / "val" / "cat.JPEG"),
        r"val/cat.JPEG is not named ILSVRC2012_val_NNNNNNNN.JPEG",
    ),
    "val layouts mixed": (
        lambda s: (s / "val" / "n01440764").mkdir(),
        r"mixes class folders \(n01440764/\) and flat images",
    ),
}


@pytest.mark.parametrize("case", list(FLAT_ERRORS))
def test_a_broken_flat_tree_is_one_line(imagenet_tree: Any, tmp_path: Path, case: str) -> None:
    source = _copy(imagenet_tree, tmp_path)
    damage, match = FLAT_ERRORS[case]
    damage(source)
    _error(source, match)
    with pytest.raises(DataError, match=match):  # prepare stops there, writing nothing
        imagenet.prepare(source, tmp_path / "out")
    assert not (tmp_path / "out").exists()


FOLDER_ERRORS = {
    "a val class not in train": (
        lambda s: (s / "val" / "n01494475").rename(s / "val" / "n09999999"),
        r"val/n09999999 is a val class with no train/ folder",
    ),
    "a train class with no val folder": (
        lambda s: shutil.rmtree(s / "val" / "n01494475"),
        r"classes differ: train/ has 5 WNIDs, val/ 4 .*n01494475 only in train/",
    ),
    "an empty val class": (
        lambda s: [p.unlink() for p in (s / "val" / "n01440764").iterdir()],
        r"val/n01440764 holds no images",
    ),
}


@pytest.mark.parametrize("case", list(FOLDER_ERRORS))
def test_a_broken_folders_tree_is_one_line(
    imagenet_tree_folders: Any, tmp_path: Path, case: str
) -> None:
    source = _copy(imagenet_tree_folders, tmp_path)
    damage, match = FOLDER_ERRORS[case]
    damage(source)
    _error(source, match)


def test_load_says_how_to_prepare_and_notices_a_missing_source(
    imagenet_tree: Any, tmp_path: Path
) -> None:
    with pytest.raises(DataError) as exc:
        imagenet.load(tmp_path / "empty")
    assert f"mlbench data prepare imagenet --source DIR --out {tmp_path / 'empty'}" in str(
        exc.value
    )
    source = _copy(imagenet_tree, tmp_path)
    out = tmp_path / "data"
    imagenet.prepare(source, out)
    source.rename(tmp_path / "moved")
    with pytest.raises(DataError, match=r"source recorded in .* is gone"):
        imagenet.load(out)
    (out / "imagenet" / "manifest.json").write_text('{"format": 1, "wnids": ')
    with pytest.raises(DataError, match=r"not valid JSON.*mlbench data prepare imagenet"):
        imagenet.load(out)
    (out / "imagenet" / "manifest.json").write_text('{"format": 1, "source": "/x"}')
    with pytest.raises(DataError, match=r"is malformed \(KeyError"):
        imagenet.load(out)


def test_cli_help_names_the_official_files(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["data", "prepare", "--help"])
    text = capsys.readouterr().out
    for needle in (
        "ILSVRC2012_img_train.tar",
        "ILSVRC2012_img_val.tar",
        "ILSVRC2012_devkit_t12.tar.gz",
        "imagenet",
        "--force",
    ):
        assert needle in text
