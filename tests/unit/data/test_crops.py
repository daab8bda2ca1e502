"""Crop boxes (torchvision's RandomResizedCrop and Resize+CenterCrop, in original pixels) and the
CPU crop + resize + flip, on real photographs."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mlbench.data.crops import (
    center_crop_box,
    decode_crop,
    image_size,
    min_decode_size,
    random_resized_crop_box,
    resized_crop,
)
from mlbench.data.decode import decode_rgb


def _within(box: tuple[int, int, int, int], height: int, width: int) -> None:
    top, left, h, w = box
    assert top >= 0 and left >= 0 and h >= 1 and w >= 1, box
    assert top + h <= height and left + w <= width, (box, height, width)


def test_random_boxes_in_bounds_with_area_and_ratio_in_range() -> None:
    rng = np.random.default_rng(0)
    sizes = rng.integers(16, 2000, size=(400, 2))
    areas, ratios = [], []
    for height, width in sizes:
        for _ in range(5):
            _, _, h, w = box = random_resized_crop_box(int(height), int(width), rng)
            _within(box, height, width)
            if not 0.75 <= width / height <= 4 / 3:
                continue  # the fallback may clamp the ratio of an elongated image
            # w and h are the rounded sides of a box whose area and ratio are in range
            assert (w + 0.5) * (h + 0.5) >= 0.08 * height * width
            assert (w - 0.5) * (h - 0.5) <= height * width
            assert (w + 0.5) / (h - 0.5) >= 0.75 and (w - 0.5) / (h + 0.5) <= 4 / 3
            areas.append(w * h / (height * width))
            ratios.append(w / h)
    # the sampled range is used, not one corner of it
    assert min(areas) < 0.12 and max(areas) > 0.9
    assert min(ratios) < 0.8 and max(ratios) > 1.25


def test_fallback_is_the_ratio_clamped_centre_crop() -> None:
    rng = np.random.default_rng(1)
    # no box of >= 8 % of the area with ratio >= 3/4 fits a 50-wide, 1000-high image
    assert random_resized_crop_box(1000, 50, rng) == ((1000 - 67) // 2, 0, 67, 50)
    assert random_resized_crop_box(50, 1000, rng) == (0, (1000 - 67) // 2, 50, 67)
    # scale fixed at the whole image: every attempt but an exact ratio misses; either way the
    # result is the whole image (its ratio is in range)
    for _ in range(20):
        assert random_resized_crop_box(300, 400, rng, scale=(1.0, 1.0)) == (0, 0, 300, 400)


def test_center_box_matches_resize_then_center_crop() -> None:
    # 375 x 500: Resize(256) -> 256 x 341 (the long side truncates), CenterCrop(224) at
    # (16, 58) (58.5 rounds to even) -> 224 x 224 of a 1.4648 (1.4663) times smaller image
    assert center_crop_box(375, 500) == (23, 85, 328, 328)
    assert center_crop_box(500, 375) == (85, 23, 328, 328)
    for height, width in [(64, 48), (333, 500), (1000, 90), (256, 256), (224, 300)]:
        top, left, h, w = box = center_crop_box(height, width)
        _within(box, height, width)
        short = min(height, width)
        assert abs(min(h, w) - 224 / 256 * short) <= 1
        assert abs(2 * top + h - height) <= 2 and abs(2 * left + w - width) <= 2


def _photo(tree: Any, size: tuple[int, int] = (500, 375)) -> bytes:
    """A real photograph at an ImageNet-like size (a tree image upscaled), as JPEG bytes."""
    with Image.open(tree.root / tree.train[5][0]) as im:
        big = im.convert("RGB").resize(size, Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    big.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_center_crop_pixels_match_the_two_step_reference(imagenet_tree: Any) -> None:
    data = _photo(imagenet_tree)
    full = Image.fromarray(decode_rgb(data))
    resized = full.resize((341, 256), Image.Resampling.BILINEAR)
    ref = np.asarray(resized.crop((58, 16, 58 + 224, 16 + 224))).transpose(2, 0, 1)
    box = center_crop_box(375, 500)
    ours = decode_crop(data, box, (375, 500), 224, False, scaled=False)
    assert ours.shape == (3, 224, 224) and ours.dtype == np.uint8
    diff = np.abs(ours.astype(float) - ref).mean()
    assert diff < 1.5, diff
    # a box 12 px off is visibly different: the comparison can fail
    top, left, h, w = box
    off = decode_crop(data, (top, left + 12, h, w), (375, 500), 224, False, scaled=False)
    assert np.abs(off.astype(float) - ref).mean() > 3 * diff


def test_scaled_decode_keeps_the_crop(imagenet_tree: Any) -> None:
    data = _photo(imagenet_tree, (1000, 750))
    box = (100, 200, 400, 500)
    # the box's 400 px short side needs >= 180 px of the image's 750: a 1/4 decode (188)
    assert min_decode_size(box, 750, 1000, 96) == 188
    assert min_decode_size(box, 750, 1000, 224) == 0  # even 1/2 would shrink the box < 224
    assert min_decode_size((0, 0, 750, 1000), 750, 1000, 224) == 375  # the whole image: 1/2
    assert decode_rgb(_photo(imagenet_tree, (1000, 750)), min_size=188).shape == (188, 250, 3)
    scaled = decode_crop(data, box, (750, 1000), 96, True)
    full = decode_crop(data, box, (750, 1000), 96, True, scaled=False)
    assert np.abs(scaled.astype(float) - full).mean() < 2.0
    flipped = decode_crop(data, box, (750, 1000), 96, False, scaled=False)
    assert np.array_equal(flipped[:, :, ::-1], full)


def test_resized_crop_of_a_known_array() -> None:
    image = np.zeros((40, 60, 3), dtype=np.uint8)
    image[10:30, 20:40] = 200  # a bright square
    out = resized_crop(image, (10.0, 20.0, 20.0, 20.0), 8, False)
    assert out.shape == (3, 8, 8) and (out[:, 1:-1, 1:-1] == 200).all()
    # Pillow's filter reaches past the box's edge (torchvision crops first, so its edge
    # pixels see only the box): the outermost ring mixes in a little of the dark surround
    assert out.min() >= 150
    out = resized_crop(image, (0.0, 0.0, 40.0, 60.0), 6, True)
    assert out[:, 0, :].max() == 0 and out[:, 3, 2:4].min() > 100


def test_image_size_from_headers_of_every_oddity(imagenet_tree: Any) -> None:
    for rel in imagenet_tree.odd.values():
        path: Path = imagenet_tree.root / rel
        with Image.open(path) as im:
            w, h = im.size
        assert image_size(path.read_bytes(), str(path)) == (h, w)
    from mlbench.errors import DataError

    with pytest.raises(DataError, match="not a JPEG or PNG"):
        image_size(b"plain text", "x.JPEG")
