"""Whole-batch image augmentation as tensor ops (no per-image Python, no PIL)."""

from __future__ import annotations

import torch


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Pad-``padding`` random crop back to the input size, then random horizontal flip.

    ``x`` is ``[B, C, H, W]`` (any dtype). Each sample draws its own offsets and flip from
    ``generator``; zero padding as in the reference augmentation.
    """
    b, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    oy = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    ox = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    rows = (oy[:, None] + torch.arange(h)[None, :])[:, None, :, None]  # [B,1,H,1]
    cols = ox[:, None] + torch.arange(w)[None, :]  # [B,W]
    cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, None, :]  # [B,1,1,W]
    batch = torch.arange(b)[:, None, None, None]
    chan = torch.arange(x.shape[1])[None, :, None, None]
    return padded[batch, chan, rows, cols]


def normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 ``[B,C,H,W]`` → float32 normalised per channel."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
    return (x.float() - m) / s
