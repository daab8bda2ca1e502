"""A batch of image files → cropped, resized, flipped ``uint8 [B, 3, S, S]`` on the training device.

Why on the device: on a GPU, decoding ImageNet JPEGs on the host costs several CPU cores per GPU
(~3-5 ms of libjpeg-turbo per 500x375 photo), and those cores are the benchmark's own. With
``data.decode_on=device`` the loader's workers only read the bytes and sample each image's crop
box from its header; this module decodes the batch with nvJPEG — one batched
``torchvision.io.decode_jpeg(list, device="cuda")`` call — and crops, resizes and flips there.

What nvJPEG refuses goes through the CPU decoder (:func:`mlbench.data.decode.decode_rgb`) and is
uploaded: a file that is not a JPEG (ILSVRC2012's PNG named ``.JPEG``) or a 4-component JPEG
(CMYK/YCCK, 22 files in ILSVRC2012 train) — both recognised from the header before the call — and
anything the batched call still rejects (a batch that fails is redone one file at a time, and a
file that fails alone falls back to the CPU), so one odd file never fails a step.

Crop + resize is ``torch.nn.functional.interpolate`` (bilinear, ``antialias=True``: PIL's
reduction filter, which the reference transforms use) in float32, rounded back to uint8. Crops of
the same size (validation: every 500x375 photo has the same centre box) are stacked and resized
in one call. Without CUDA or without an importable torchvision the same function decodes on the
CPU and runs the *same* crop/resize/flip code on the CPU tensors — the fallback, and what the CPU
tests exercise; only the nvJPEG call itself differs on a GPU.

torchvision is not a dependency (its wheels for a CPU-only torch do not import): it is imported
here lazily, and any failure to import it makes :func:`device_decoder_available` say why.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

import numpy as np
import torch

from mlbench.data.decode import JPEG_MAGIC, decode_rgb

#: crops stacked into one ``interpolate`` call at most (bounds the float32 temporary: 32 crops
#: of 500x500x3 are 96 MB)
GROUP_MAX = 32

# start-of-frame markers (they hold the component count); C4 (DHT), C8 (JPG), CC (DAC) are not
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def jpeg_components(data: bytes) -> int | None:
    """The component count of a JPEG's frame header (1 gray, 3 YCbCr/RGB, 4 CMYK/YCCK), or None
    when ``data`` is not a JPEG or has no readable frame header before the scan."""
    if not data.startswith(JPEG_MAGIC):
        return None
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # no length field
            i += 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in _SOF:
            # length(2) precision(1) height(2) width(2) components(1)
            return data[i + 9] if i + 9 < n else None
        if marker == 0xDA:  # start of scan: no frame header before it
            return None
        i += 2 + length
    return None


def _on_device_decoder(data: bytes) -> bool:
    """Whether nvJPEG is handed this file: a 1- or 3-component JPEG."""
    return jpeg_components(data) in (1, 3)


def _torchvision_io() -> Any:
    """``torchvision.io``, imported lazily (a module attribute so tests can substitute one)."""
    return importlib.import_module("torchvision.io")


def _probe_jpeg() -> bytes:
    """A tiny real JPEG (16x16, YCbCr) to try the device decoder on once."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 90)).save(buf, format="JPEG")
    return buf.getvalue()


@functools.lru_cache(maxsize=8)
def _available(device: torch.device) -> tuple[bool, str]:
    if device.type != "cuda":
        return False, f"the device is {device}, not CUDA: nvJPEG decodes on CUDA devices only"
    if not torch.cuda.is_available():
        return False, "torch sees no CUDA device"
    try:
        tv_io = _torchvision_io()
        decode_jpeg, mode = tv_io.decode_jpeg, tv_io.ImageReadMode.RGB
        # one real decode: a torchvision built without nvJPEG imports fine and fails here
        out = decode_jpeg([_as_tensor(_probe_jpeg())], mode=mode, device=device)
        if tuple(out[0].shape) != (3, 16, 16):
            return False, f"torchvision's decode_jpeg gave shape {tuple(out[0].shape)}"
    except Exception as exc:  # any import or runtime failure means: not usable, say why
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        kind = type(exc).__name__
        return False, f"torchvision.io.decode_jpeg on {device} unusable: {kind}: {first}"
    version = getattr(importlib.import_module("torchvision"), "__version__", "?")
    return True, f"nvJPEG through torchvision {version} on {device}"


def device_decoder_available(device: torch.device) -> tuple[bool, str]:
    """``(usable, reason)``: whether :func:`decode_batch` decodes with nvJPEG on ``device``.

    Never raises: a CPU device, no CUDA, a torchvision that does not import or was built without
    nvJPEG all give ``(False, one-line reason)`` (runs record it). Tried once per device.
    """
    return _available(torch.device(device))


def _as_tensor(data: bytes) -> torch.Tensor:
    """File bytes as a (writable, CPU) uint8 tensor — what torchvision's decoders take."""
    return torch.from_numpy(np.frombuffer(data, dtype=np.uint8).copy())


def _cpu_decode(data: bytes, index: int, device: torch.device) -> torch.Tensor:
    """One file through the CPU decoder, as ``uint8 [3, H, W]`` on ``device``."""
    rgb = decode_rgb(data, name=f"batch item {index}")
    if not rgb.flags.writeable:  # Pillow's arrays are read-only views; torch wants to own one
        rgb = rgb.copy()
    return torch.from_numpy(rgb).to(device).permute(2, 0, 1)


def _nvjpeg(datas: list[bytes], device: torch.device) -> list[torch.Tensor | None]:
    """Decode what nvJPEG takes, in one batched call; None where a file must go to the CPU.

    A batched call that raises is redone one file at a time (it fails as a whole for one bad
    file); a file that fails alone is left to the CPU decoder.
    """
    tv_io = _torchvision_io()
    mode = tv_io.ImageReadMode.RGB
    out: list[torch.Tensor | None] = [None] * len(datas)
    todo = [i for i, d in enumerate(datas) if _on_device_decoder(d)]
    if not todo:
        return out
    tensors = [_as_tensor(datas[i]) for i in todo]
    try:
        decoded = tv_io.decode_jpeg(tensors, mode=mode, device=device)
        for i, img in zip(todo, decoded, strict=True):
            out[i] = img
    except RuntimeError:
        for i, t in zip(todo, tensors, strict=True):
            try:
                out[i] = tv_io.decode_jpeg([t], mode=mode, device=device)[0]
            except RuntimeError:
                out[i] = None
    for i in todo:  # a decoder that ignored mode=RGB on a grayscale file: expand its channel
        img = out[i]
        if img is not None and img.shape[0] == 1:
            out[i] = img.expand(3, -1, -1)
    return out


def _check(datas: list[bytes], boxes: torch.Tensor, flips: torch.Tensor, size: int) -> None:
    b = len(datas)
    if tuple(boxes.shape) != (b, 4) or tuple(flips.shape) != (b,):
        raise ValueError(
            f"decode_batch: {b} files need boxes [{b},4] and flips [{b}], got "
            f"{tuple(boxes.shape)} and {tuple(flips.shape)}"
        )
    if size < 1:
        raise ValueError(f"decode_batch: size must be >= 1, got {size}")
    if b and bool((boxes[:, 2:] < 1).any()):
        raise ValueError("decode_batch: every box needs a height and width >= 1")


def crop_resize_flip(
    images: list[torch.Tensor], boxes: torch.Tensor, flips: torch.Tensor, size: int
) -> torch.Tensor:
    """Per image: crop ``box`` = (top, left, height, width), resize to ``size``x``size``
    (bilinear, antialiased), flip where ``flips``; ``uint8 [B, 3, size, size]`` on the images'
    device. A box that runs past the image (header and decoder disagreeing by a pixel) is clipped
    to it. Crops of equal size are resized together, :data:`GROUP_MAX` at a time."""
    device = images[0].device if images else torch.device("cpu")
    out = torch.empty((len(images), 3, size, size), dtype=torch.uint8, device=device)
    crops: list[torch.Tensor] = []
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (img, box) in enumerate(zip(images, boxes.tolist(), strict=True)):
        height, width = img.shape[1], img.shape[2]
        top, left = min(max(box[0], 0), height - 1), min(max(box[1], 0), width - 1)
        h, w = min(box[2], height - top), min(box[3], width - left)
        crops.append(img[:, top : top + h, left : left + w])
        groups.setdefault((h, w), []).append(i)
    for (h, w), members in groups.items():
        for lo in range(0, len(members), GROUP_MAX):
            idx = members[lo : lo + GROUP_MAX]
            stack = torch.stack([crops[i] for i in idx])
            if (h, w) != (size, size):
                resized = torch.nn.functional.interpolate(
                    stack.float(),
                    size=(size, size),
                    mode="bilinear",
                    align_corners=False,
                    antialias=True,
                )
                stack = resized.round_().clamp_(0, 255).to(torch.uint8)
            out[idx] = stack
    # a select, not ``out[flip] = ...``: a boolean index would wait for the GPU (nonzero)
    flip = flips.to(device=device, dtype=torch.bool).view(-1, 1, 1, 1)
    return torch.where(flip, out.flip(-1), out)


def decode_batch(
    datas: list[bytes], boxes: torch.Tensor, flips: torch.Tensor, size: int, device: torch.device
) -> torch.Tensor:
    """Decode ``datas`` (file bytes), crop each to its box (top, left, height, width, in the
    original image's pixels), resize to ``size``x``size``, flip where ``flips``: ``uint8
    [B, 3, size, size]`` on ``device``. nvJPEG where :func:`device_decoder_available`, else (and
    for the files nvJPEG refuses) the CPU decoder. Raises :class:`mlbench.errors.DataError`
    naming the batch item when no decoder reads a file."""
    device = torch.device(device)
    _check(datas, boxes, flips, size)
    if not datas:
        return torch.empty((0, 3, size, size), dtype=torch.uint8, device=device)
    usable, _ = device_decoder_available(device)
    decoded: list[torch.Tensor | None] = _nvjpeg(datas, device) if usable else [None] * len(datas)
    images = [
        img if img is not None else _cpu_decode(data, i, device)
        for i, (img, data) in enumerate(zip(decoded, datas, strict=True))
    ]
    return crop_resize_flip(images, boxes, flips, size)
