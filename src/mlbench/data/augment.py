"""Whole-batch image augmentation as tensor ops (no per-image Python, no PIL).

The ops run wherever the batch is (``data.augment_on``: the CPU before the copy, or the GPU where
the uint8 shard is resident), while the random offsets and flips are always drawn from the
loader's *CPU* generator and then moved: both placements consume the same stream and give
bit-identical batches (an index gather, then one correctly rounded subtraction and division per
pixel), so moving augmentation to the device changes no result.
"""

from __future__ import annotations

import torch


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Pad-``padding`` random crop back to the input size, then random horizontal flip.

    ``x`` is ``[B, C, H, W]`` (any dtype). Each sample draws its own offsets and flip from
    ``generator``; zero padding as in the reference augmentation.
    """
    b, _, h, w = x.shape
    dev = x.device
    padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    # drawn on the CPU generator whatever x's device (see the module docstring), then moved
    oy = torch.randint(0, 2 * padding + 1, (b,), generator=generator).to(dev)
    ox = torch.randint(0, 2 * padding + 1, (b,), generator=generator).to(dev)
    flip = (torch.rand(b, generator=generator) < 0.5).to(dev)
    rows = (oy[:, None] + torch.arange(h, device=dev)[None, :])[:, None, :, None]  # [B,1,H,1]
    cols = ox[:, None] + torch.arange(w, device=dev)[None, :]  # [B,W]
    cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, None, :]  # [B,1,1,W]
    batch = torch.arange(b, device=dev)[:, None, None, None]
    chan = torch.arange(x.shape[1], device=dev)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 ``[B,C,H,W]`` → float32 normalised per channel."""
    m = (torch.tensor(mean, dtype=torch.float32) * 255.0).view(1, -1, 1, 1).to(x.device)
    s = (torch.tensor(std, dtype=torch.float32) * 255.0).view(1, -1, 1, 1).to(x.device)
    return (x.float() - m) / s
