"""Crop boxes for ImageNet-style augmentation, and the CPU crop + resize + flip of one image.

Why our own and not torchvision's: torchvision's wheels do not import on this CPU-only torch, and
the loader's worker processes should not import torch at all (seconds of start-up and hundreds of
MB per process for nothing). The box sampling follows torchvision's
``RandomResizedCrop.get_params`` step for step (10 attempts with a uniform area fraction and a
log-uniform aspect ratio, then a centre crop clamped to the ratio range), so the augmentation is
the one the Goyal et al. recipe was tuned with; the random numbers come from a numpy
``Generator`` the caller seeds per sample, so a sample's crop does not depend on which worker
decodes it.

Boxes are ``(top, left, height, width)`` in the pixels of the *original* image — the contract of
:mod:`mlbench.data.device_decode` too — so a reduced-scale (DCT) decode only has to scale the box.

Resampling: Pillow's ``resize(size, BILINEAR, box=...)`` on the decoded array. Pillow's bilinear
filter widens its support when it shrinks (it antialiases, like torchvision's PIL path and its
``antialias=True``), and ``box=`` resamples straight from the region, with sub-pixel box edges, in
one pass: no intermediate crop copy. One difference from torchvision's crop-then-resize: at the
box's edges the filter's support reaches a pixel or two past the box (into real image content, where
torchvision repeats the edge), which changes only the outermost output pixels slightly.
``reducing_gap`` (a box-filter ``reduce()`` by an integer factor first) and crop-then-resize cost
the same at ImageNet's sizes (``benchmarks/image_decode.py``: 0.69-0.70 ms each; ``reducing_gap``
never engages below a 4x reduction), and only ``box=`` takes the fractional edges a DCT-scaled
decode leaves, so ``box=`` it is.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np

from mlbench.data.decode import decode_rgb
from mlbench.errors import DataError

Box = tuple[int, int, int, int]  # top, left, height, width (original pixels)

SCALE = (0.08, 1.0)
RATIO = (3.0 / 4.0, 4.0 / 3.0)

try:  # pragma: no cover - depends on the installed wheels
    import simplejpeg as _simplejpeg
except ImportError:  # pragma: no cover
    _simplejpeg = None


def random_resized_crop_box(
    height: int,
    width: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = SCALE,
    ratio: tuple[float, float] = RATIO,
) -> Box:
    """torchvision's ``RandomResizedCrop.get_params``: a box whose area is a uniform fraction in
    ``scale`` of the image's and whose aspect ratio (w/h) is log-uniform in ``ratio``; after 10
    misses (the box does not fit), the centre crop of the whole image with its ratio clamped
    into ``ratio``."""
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w = width
        h = round(w / min(ratio))
    elif in_ratio > max(ratio):
        h = height
        w = round(h * max(ratio))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def center_crop_box(height: int, width: int, resize_size: int = 256, image_size: int = 224) -> Box:
    """The box of the original image that "resize the shorter side to ``resize_size``, then
    centre-crop ``image_size``" keeps (torchvision's ``Resize(256)`` + ``CenterCrop(224)``:
    the longer side's length truncates, the crop's offset rounds), mapped back to original
    pixels and rounded to whole pixels (the device decoder takes integer boxes; the CPU path
    uses the same box, so both crop the same region)."""
    if height <= width:
        new_h, new_w = resize_size, int(resize_size * width / height)
    else:
        new_h, new_w = int(resize_size * height / width), resize_size
    top = round((new_h - image_size) / 2.0)
    left = round((new_w - image_size) / 2.0)
    sy, sx = height / new_h, width / new_w
    h = min(height, max(1, round(image_size * sy)))
    w = min(width, max(1, round(image_size * sx)))
    t = min(max(0, round(top * sy)), height - h)
    l_ = min(max(0, round(left * sx)), width - w)
    return t, l_, h, w


def image_size(data: bytes, name: str = "<bytes>") -> tuple[int, int]:
    """``(height, width)`` from the file's header, without decoding it: simplejpeg's header
    parser for JPEG, Pillow's lazy open (it reads only the header) for the rest."""
    if _simplejpeg is not None and data[:3] == b"\xff\xd8\xff":
        try:
            h, w, _, _ = _simplejpeg.decode_jpeg_header(data)
            return int(h), int(w)
        except (ValueError, RuntimeError):
            pass  # Pillow may still read it (or say why not)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
    except UnidentifiedImageError:
        raise DataError(f"cannot decode image {name}: not a JPEG or PNG file") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"cannot decode image {name}: {exc}") from None
    return int(h), int(w)


def min_decode_size(box: Box, height: int, width: int, size: int) -> int:
    """The ``min_size`` for :func:`decode_rgb` that selects the smallest power-of-two DCT
    scale (1/2, 1/4, 1/8) at which the box, scaled with the image, still spans >= ``size``
    pixels each way (the crop is never upsampled because of the shortcut); 0 (a full decode)
    when even 1/2 would be too small.

    Why only powers of two: libjpeg-turbo also scales by 3/8, 5/8, 7/8..., and simplejpeg
    picks the smallest factor that meets a minimum size — but those IDCTs are slower than the
    full-size one (``benchmarks/image_decode.py``: a 7/8-scale decode cost more than a full
    one), so asking for the exact size a 1/k decode gives is what makes the shortcut pay."""
    _, _, bh, bw = box
    short = min(height, width)
    need = math.ceil(size * short / min(bh, bw))
    for k in (8, 4, 2):
        if -(-short // k) >= need:
            return -(-short // k)
    return 0


def resized_crop(
    image: np.ndarray, box: tuple[float, float, float, float], size: int, flip: bool
) -> np.ndarray:
    """Crop ``box`` (top, left, height, width; fractional edges allowed) of an RGB ``uint8``
    ``[H, W, 3]`` array, resize it to ``size`` x ``size`` (bilinear, antialiased) and
    optionally mirror it; returns ``[3, size, size]`` ``uint8``."""
    from PIL import Image

    top, left, h, w = box
    img = Image.fromarray(image)
    out: Any = img.resize(
        (size, size), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h)
    )
    if flip:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(out).transpose(2, 0, 1)


def decode_crop(
    data: bytes,
    box: Box,
    original: tuple[int, int],
    size: int,
    flip: bool,
    *,
    name: str = "<bytes>",
    scaled: bool = True,
) -> np.ndarray:
    """Decode ``data`` (at a reduced DCT scale where the box allows, when ``scaled``), then
    :func:`resized_crop` the box — given in ``original`` (height, width) pixels — scaled to the
    decoded size. Returns ``[3, size, size]`` ``uint8``."""
    height, width = original
    min_size = min_decode_size(box, height, width, size) if scaled else 0
    image = decode_rgb(data, min_size=min_size, name=name)
    dh, dw = image.shape[0], image.shape[1]
    sy, sx = dh / height, dw / width
    top, left, h, w = box
    return resized_crop(image, (top * sy, left * sx, h * sy, w * sx), size, flip)
