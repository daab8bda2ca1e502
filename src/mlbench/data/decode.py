"""Image file bytes → an RGB ``uint8`` array ``[H, W, 3]``: simplejpeg where it decodes the file,
Pillow otherwise.

Why two decoders: simplejpeg (libjpeg-turbo's TurboJPEG API) decodes a baseline JPEG into a numpy
array without the Python-object overhead of Pillow's image pipeline, and is the faster path on
the ~99.9 % of ImageNet that is ordinary YCbCr JPEG (``benchmarks/image_decode.py``). It cannot
convert CMYK JPEGs to RGB and does not read PNG, and ILSVRC2012 has both (22 CMYK JPEGs and one
PNG saved as ``.JPEG`` in train): those, and any file simplejpeg refuses, go through Pillow,
which converts every mode (``L``, ``CMYK``, ``P``, ``RGBA``) to ``RGB``. Both give the same
array layout, so nothing downstream knows which one ran.

simplejpeg is optional at import time (a missing wheel on some platform must not stop a run):
:func:`decoder_names` says what this process will use, and runs record it.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from mlbench.errors import DataError

try:  # pragma: no cover - depends on the installed wheels
    import simplejpeg as _simplejpeg
except ImportError:  # pragma: no cover
    _simplejpeg = None

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def decoder_names() -> tuple[str, ...]:
    """The decoders this process tries, in order (recorded with a run's data facts)."""
    return ("simplejpeg", "pillow") if _simplejpeg is not None else ("pillow",)


def _simple(data: bytes, min_size: int) -> np.ndarray | None:
    """simplejpeg's decode, or None where it cannot (CMYK, a PNG, a corrupt stream...).

    ``min_size`` lets libjpeg-turbo decode at 1/2, 1/4 or 1/8 scale (a DCT-domain shortcut)
    while both sides stay >= ``min_size``: a 500x375 photo cropped to 224 never needs all
    its pixels. 0 decodes at full size.
    """
    if _simplejpeg is None or not data.startswith(JPEG_MAGIC):
        return None
    try:
        _, _, colorspace, _ = _simplejpeg.decode_jpeg_header(data)
        if colorspace not in ("Gray", "YCbCr", "RGB"):  # CMYK/YCCK: Pillow converts those
            return None
        if min_size > 0:
            return _simplejpeg.decode_jpeg(
                data, colorspace="RGB", min_height=min_size, min_width=min_size
            )
        return _simplejpeg.decode_jpeg(data, colorspace="RGB")
    except (ValueError, RuntimeError):
        return None


def _pillow(data: bytes, min_size: int, name: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            if min_size > 0 and img.format == "JPEG":
                img.draft("RGB", (min_size, min_size))  # the same DCT-scale shortcut
            rgb = img.convert("RGB")
            rgb.load()
    except UnidentifiedImageError:
        raise DataError(f"cannot decode image {name}: not a JPEG or PNG file") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"cannot decode image {name}: {exc}") from None
    return np.asarray(rgb)


def decode_rgb(data: bytes, *, min_size: int = 0, name: str = "<bytes>") -> np.ndarray:
    """Decode ``data`` to a contiguous RGB ``uint8`` array ``[H, W, 3]``.

    ``min_size`` > 0 allows a reduced-scale decode whose shorter side is still >= ``min_size``
    (never smaller than the image). Raises :class:`DataError` naming ``name`` when no decoder
    reads the bytes (truncated file, not an image).
    """
    out = _simple(data, min_size)
    if out is None:
        out = _pillow(data, min_size, name)
    if out.ndim != 3 or out.shape[2] != 3 or out.dtype != np.uint8:  # invariant of both paths
        raise DataError(f"cannot decode image {name}: got an array of shape {out.shape}")
    return np.ascontiguousarray(out)


def decode_file(path: Any, *, min_size: int = 0) -> np.ndarray:
    """:func:`decode_rgb` of a file's bytes."""
    with open(path, "rb") as f:
        data = f.read()
    return decode_rgb(data, min_size=min_size, name=str(path))
