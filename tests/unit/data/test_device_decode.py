"""decode_batch: the CPU fallback against a PIL reference, flips, edge boxes, the odd files, and
the nvJPEG branch's routing through a faithful stand-in for ``torchvision.io`` (no GPU here).

The stand-in has torchvision's signature (``decode_jpeg(input, mode, device,
apply_exif_orientation)``, a list in → a list of ``uint8 [3, H, W]`` out), decodes with Pillow
and, like nvJPEG, refuses what is not a 1- or 3-component JPEG with a RuntimeError for the whole
call. It records every call, so the tests see which files reached it and in how many calls.
"""

from __future__ import annotations

import enum
import io
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from mlbench.data import device_decode
from mlbench.data.decode import decode_rgb
from mlbench.data.device_decode import (
    crop_resize_flip,
    decode_batch,
    device_decoder_available,
    jpeg_components,
)
from mlbench.errors import DataError

CPU = torch.device("cpu")


def _files(tree: Any, rels: list[str]) -> list[bytes]:
    return [(Path(tree.root) / r).read_bytes() for r in rels]


def _reference(data: bytes, box: list[int], size: int, flip: bool) -> np.ndarray:
    """decode_rgb, then PIL's crop and bilinear resize (PIL's reducing filter): [3, S, S]."""
    top, left, h, w = box
    img = Image.fromarray(decode_rgb(data)).crop((left, top, left + w, top + h))
    img = img.resize((size, size), Image.Resampling.BILINEAR)
    if flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(img).transpose(2, 0, 1)


def _random_boxes(datas: list[bytes], seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    boxes = []
    for d in datas:
        h, w = decode_rgb(d).shape[:2]
        bh, bw = int(rng.integers(h // 3, h + 1)), int(rng.integers(w // 3, w + 1))
        boxes.append([int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1)), bh, bw])
    return torch.tensor(boxes, dtype=torch.int64)


@pytest.mark.parametrize("size", [32, 64])
def test_fallback_matches_pil_reference(imagenet_tree: Any, size: int) -> None:
    rels = [r for r, _ in imagenet_tree.train[3:15]]  # ordinary JPEGs, 48-200 px
    datas = _files(imagenet_tree, rels)
    boxes = _random_boxes(datas, seed=size)
    flips = torch.tensor([i % 2 == 1 for i in range(len(datas))])
    out = decode_batch(datas, boxes, flips, size, CPU)
    assert out.dtype == torch.uint8 and tuple(out.shape) == (len(datas), 3, size, size)
    for i, d in enumerate(datas):
        ref = _reference(d, boxes[i].tolist(), size, bool(flips[i]))
        diff = np.abs(out[i].numpy().astype(int) - ref.astype(int))
        # torch's antialiased bilinear is PIL's filter in float32; PIL rounds in fixed point
        assert diff.mean() < 0.6, (rels[i], diff.mean())
        assert diff.max() <= 3, (rels[i], diff.max())


def test_flip_is_an_exact_mirror(imagenet_tree: Any) -> None:
    datas = _files(imagenet_tree, [r for r, _ in imagenet_tree.train[3:9]])
    boxes = _random_boxes(datas, seed=1)
    plain = decode_batch(datas, boxes, torch.zeros(len(datas), dtype=torch.bool), 40, CPU)
    flipped = decode_batch(datas, boxes, torch.ones(len(datas), dtype=torch.bool), 40, CPU)
    assert torch.equal(flipped, plain.flip(-1))
    assert not torch.equal(flipped, plain)


def test_boxes_at_the_edges_and_beyond(imagenet_tree: Any) -> None:
    data = _files(imagenet_tree, [imagenet_tree.train[5][0]])[0]
    h, w = decode_rgb(data).shape[:2]
    boxes = [
        [0, 0, h, w],  # the whole image
        [h - 20, w - 20, 20, 20],  # the bottom-right corner
        [h - 1, 0, 1, w],  # the last row
        [0, w - 1, h, 1],  # the last column
    ]
    out = decode_batch([data] * 4, torch.tensor(boxes), torch.zeros(4, dtype=torch.bool), 24, CPU)
    for i, box in enumerate(boxes):
        ref = _reference(data, box, 24, False)
        assert np.abs(out[i].numpy().astype(int) - ref.astype(int)).max() <= 3, box
    # a box a pixel past the image (a header/decoder disagreement) is clipped to the image
    over = torch.tensor([[h - 20, w - 20, 21, 21], [h - 20, w - 20, 20, 20]])
    clipped = decode_batch([data] * 2, over, torch.zeros(2, dtype=torch.bool), 24, CPU)
    assert torch.equal(clipped[0], clipped[1])


def test_odd_files_decode(imagenet_tree: Any) -> None:
    rels = [imagenet_tree.odd[k] for k in ("gray", "cmyk", "png", "val-cmyk")]
    datas = _files(imagenet_tree, rels)
    shapes = [decode_rgb(d).shape[:2] for d in datas]
    boxes = torch.tensor([[0, 0, h, w] for h, w in shapes])
    out = decode_batch(datas, boxes, torch.zeros(4, dtype=torch.bool), 32, CPU)
    for i, d in enumerate(datas):
        ref = _reference(d, boxes[i].tolist(), 32, False)
        assert np.abs(out[i].numpy().astype(int) - ref.astype(int)).max() <= 3, rels[i]
    gray = out[0]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])


def test_jpeg_components_from_the_header(imagenet_tree: Any) -> None:
    odd = imagenet_tree.odd
    get = {k: _files(imagenet_tree, [odd[k]])[0] for k in odd}
    assert jpeg_components(get["gray"]) == 1
    assert jpeg_components(get["cmyk"]) == 4 and jpeg_components(get["val-cmyk"]) == 4
    assert jpeg_components(get["png"]) is None
    assert jpeg_components(_files(imagenet_tree, [imagenet_tree.train[4][0]])[0]) == 3
    assert jpeg_components(b"\xff\xd8\xff") is None  # truncated before any frame header


def test_bad_input_is_reported() -> None:
    with pytest.raises(DataError, match="batch item 1"):
        decode_batch(
            [_jpeg(8, 8), b"not an image"],
            torch.tensor([[0, 0, 8, 8], [0, 0, 8, 8]]),
            torch.zeros(2, dtype=torch.bool),
            8,
            CPU,
        )
    with pytest.raises(ValueError, match="boxes"):
        decode_batch([_jpeg(8, 8)], torch.zeros(2, 4, dtype=torch.int64), torch.zeros(1), 8, CPU)
    with pytest.raises(ValueError, match="height and width"):
        decode_batch([_jpeg(8, 8)], torch.tensor([[0, 0, 0, 8]]), torch.zeros(1), 8, CPU)
    empty = decode_batch([], torch.zeros(0, 4, dtype=torch.int64), torch.zeros(0), 8, CPU)
    assert tuple(empty.shape) == (0, 3, 8, 8)


def test_equal_crops_resize_as_one_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation boxes of equal size go through one interpolate call (GROUP_MAX at a time)."""
    calls: list[int] = []
    real = torch.nn.functional.interpolate

    def counting(x: torch.Tensor, **kw: Any) -> torch.Tensor:
        calls.append(x.shape[0])
        return real(x, **kw)

    monkeypatch.setattr(torch.nn.functional, "interpolate", counting)
    monkeypatch.setattr(device_decode, "GROUP_MAX", 4)
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 50, 60), dtype=torch.uint8, generator=g) for _ in range(6)]
    images.append(torch.randint(0, 256, (3, 30, 30), dtype=torch.uint8, generator=g))
    boxes = torch.tensor([[5, 5, 40, 40]] * 6 + [[0, 0, 30, 30]])
    out = crop_resize_flip(images, boxes, torch.zeros(7, dtype=torch.bool), 16)
    assert sorted(calls) == [1, 2, 4]
    single = crop_resize_flip(images[5:6], boxes[5:6], torch.zeros(1, dtype=torch.bool), 16)
    assert torch.equal(out[5], single[0])


# --- availability -----------------------------------------------------------------------------


def test_cpu_device_is_not_available() -> None:
    ok, reason = device_decoder_available(CPU)
    assert ok is False and "cpu" in reason and "\n" not in reason


def _jpeg(w: int, h: int, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (w, h), 120 if mode == "L" else (10, 200, 60)).save(buf, format="JPEG")
    return buf.getvalue()


class _ReadMode(enum.Enum):
    UNCHANGED = 0
    GRAY = 1
    RGB = 3


class FakeTorchvisionIO(types.ModuleType):
    """``torchvision.io`` as far as decode_batch uses it, recording calls (see the docstring)."""

    ImageReadMode = _ReadMode

    def __init__(self, fail_on: bytes | None = None) -> None:
        super().__init__("torchvision.io")
        self.calls: list[dict[str, Any]] = []
        self.fail_on = fail_on

    def decode_jpeg(
        self,
        input: torch.Tensor | list[torch.Tensor],
        mode: _ReadMode = _ReadMode.UNCHANGED,
        device: str | torch.device = "cpu",
        apply_exif_orientation: bool = False,
    ) -> torch.Tensor | list[torch.Tensor]:
        items = input if isinstance(input, list) else [input]
        self.calls.append({"n": len(items), "mode": mode, "device": torch.device(device)})
        out = []
        for t in items:
            assert t.dtype == torch.uint8 and t.dim() == 1 and t.device.type == "cpu"
            data = t.numpy().tobytes()
            if jpeg_components(data) not in (1, 3) or (self.fail_on and data == self.fail_on):
                raise RuntimeError("nvjpegDecode failed: 6 (NVJPEG_STATUS_JPEG_NOT_SUPPORTED)")
            with Image.open(io.BytesIO(data)) as im:
                rgb = np.asarray(im.convert("RGB") if mode == _ReadMode.RGB else im)
            out.append(torch.from_numpy(rgb.copy()).permute(2, 0, 1).to(device))
        return out if isinstance(input, list) else out[0]


def _install(monkeypatch: pytest.MonkeyPatch, fake: types.ModuleType | None) -> None:
    tv = types.ModuleType("torchvision")
    tv.__version__ = "0.0-fake"  # type: ignore[attr-defined]
    if fake is not None:
        tv.io = fake  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "torchvision", tv)
        monkeypatch.setitem(sys.modules, "torchvision.io", fake)
    else:  # an import that fails, as torchvision's wheels do beside a CPU-only torch
        monkeypatch.setitem(sys.modules, "torchvision", None)
        monkeypatch.setitem(sys.modules, "torchvision.io", None)
    device_decode._available.cache_clear()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


@pytest.fixture(autouse=True)
def _fresh_cache() -> Any:
    device_decode._available.cache_clear()
    yield
    device_decode._available.cache_clear()


def test_available_with_a_working_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeTorchvisionIO()
    _install(monkeypatch, fake)
    # the fake returns CPU tensors for device "cuda" only through .to(): probe with that path
    monkeypatch.setattr(
        fake, "decode_jpeg", lambda x, mode, device: [torch.zeros(3, 16, 16, dtype=torch.uint8)]
    )
    ok, reason = device_decoder_available(torch.device("cuda", 0))
    assert ok and "0.0-fake" in reason


def test_unavailable_reasons(monkeypatch: pytest.MonkeyPatch) -> None:
    _install(monkeypatch, None)
    ok, reason = device_decoder_available(torch.device("cuda"))
    assert not ok and "ModuleNotFoundError" in reason and "\n" not in reason

    fake = FakeTorchvisionIO()
    _install(monkeypatch, fake)

    def not_built(*a: Any, **kw: Any) -> Any:
        raise RuntimeError("torchvision not compiled with nvJPEG support\nsecond line")

    monkeypatch.setattr(fake, "decode_jpeg", not_built)
    ok, reason = device_decoder_available(torch.device("cuda"))
    assert not ok and reason.endswith("not compiled with nvJPEG support")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    device_decode._available.cache_clear()
    assert device_decoder_available(torch.device("cuda")) == (False, "torch sees no CUDA device")


# --- the nvJPEG branch, driven on the CPU through the stand-in ------------------------------


def _odd_batch(tree: Any) -> tuple[list[bytes], list[str]]:
    rels = [r for r, _ in tree.train[:10]] + [tree.odd["val-cmyk"]]
    return _files(tree, rels), rels


def _as_device_decoder(monkeypatch: pytest.MonkeyPatch, fake: FakeTorchvisionIO) -> None:
    _install(monkeypatch, fake)
    monkeypatch.setattr(device_decode, "device_decoder_available", lambda d: (True, "fake"))


def test_nvjpeg_branch_routes_odd_files_to_the_cpu(
    imagenet_tree: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    datas, rels = _odd_batch(imagenet_tree)
    boxes = _random_boxes(datas, seed=3)
    flips = torch.arange(len(datas)) % 3 == 0
    expected = decode_batch(datas, boxes, flips, 48, CPU)  # the fallback, before the fake

    fake = FakeTorchvisionIO()
    _as_device_decoder(monkeypatch, fake)
    out = decode_batch(datas, boxes, flips, 48, CPU)
    # one batched call, holding every 1- or 3-component JPEG (gray included), none of the rest
    on_device = [r for r, d in zip(rels, datas, strict=True) if jpeg_components(d) in (1, 3)]
    assert imagenet_tree.odd["gray"] in on_device
    assert len(on_device) == len(datas) - 3  # the PNG and the two CMYK files stay on the CPU
    assert fake.calls == [{"n": len(on_device), "mode": _ReadMode.RGB, "device": CPU}]
    # simplejpeg (the fallback) and Pillow (the stand-in) share libjpeg-turbo: same pixels
    assert (out.int() - expected.int()).abs().max() <= 1


def test_nvjpeg_branch_retries_one_by_one(
    imagenet_tree: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    datas, _ = _odd_batch(imagenet_tree)
    boxes = _random_boxes(datas, seed=4)
    flips = torch.zeros(len(datas), dtype=torch.bool)
    expected = decode_batch(datas, boxes, flips, 32, CPU)
    bad = datas[5]  # an ordinary JPEG the device decoder rejects (as nvJPEG may, e.g. 4:1:1)
    fake = FakeTorchvisionIO(fail_on=bad)
    _as_device_decoder(monkeypatch, fake)
    out = decode_batch(datas, boxes, flips, 32, CPU)
    n = len(datas) - 3
    # the batch failed as a whole, then each file alone; the rejected one went to the CPU
    assert [c["n"] for c in fake.calls] == [n] + [1] * n
    assert (out.int() - expected.int()).abs().max() <= 1


# --- on a real GPU (skipped without one) ------------------------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@needs_cuda
def test_nvjpeg_on_the_gpu_matches_the_cpu_path(imagenet_tree: Any) -> None:
    cuda = torch.device("cuda", torch.cuda.current_device())
    ok, reason = device_decoder_available(cuda)
    if not ok:
        pytest.skip(f"no device decoder: {reason}")
    datas, _ = _odd_batch(imagenet_tree)
    datas += _files(imagenet_tree, [imagenet_tree.odd["png"], imagenet_tree.odd["cmyk"]])
    boxes = _random_boxes(datas, seed=5)
    flips = torch.arange(len(datas)) % 2 == 0
    on_gpu = decode_batch(datas, boxes, flips, 48, cuda)
    assert on_gpu.device.type == "cuda" and on_gpu.dtype == torch.uint8
    on_cpu = decode_batch(datas, boxes, flips, 48, CPU)
    # nvJPEG's IDCT and chroma upsampling round differently from libjpeg-turbo's
    diff = (on_gpu.cpu().int() - on_cpu.int()).abs().float()
    assert diff.mean() < 2.0 and diff.amax(dim=(1, 2, 3)).max() < 64
