"""Mixed precision, orthogonal to every communication scheme.

* ``bf16``: forward (and loss) under ``torch.autocast(dtype=bfloat16)``; no loss scaling needed.
* ``fp16``: forward under ``torch.autocast(dtype=float16)`` with **fp32 master weights** (the model
  and optimizer stay fp32; autocast casts per op) and **dynamic loss scaling**: the loss is
  multiplied by ``scale`` before backward, gradients are unscaled right after backward — before
  any scheme communicates or compresses them — and checked for inf/NaN. Ranks agree on overflow
  with a one-float max-all-reduce so all skip the same steps; an overflow step is skipped (no
  optimizer update), counted, and halves the scale; ``window`` clean steps in a row double it
  (up to ``max``).

We use our own scaler rather than ``torch.amp.GradScaler`` because the scale must be applied and
removed around *our* communication hooks, and the skip decision must be global.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch

from mlbench.dist import DistContext

_NO_AUTOCAST = contextlib.nullcontext()


class Precision:
    def __init__(
        self,
        mode: str,
        device: torch.device,
        dist: DistContext,
        *,
        init_scale: float = 2.0**16,
        window: int = 2000,
        max_scale: float = 2.0**24,
    ) -> None:
        if mode not in ("fp32", "fp16", "bf16"):
            raise ValueError(f"unknown precision {mode!r}")
        self.mode = mode
        self.device = device
        self.dist = dist
        self.scale = init_scale if mode == "fp16" else 1.0
        self.window, self.max_scale = window, max_scale
        self.clean_steps = 0
        self.skipped_steps = 0

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The forward pass's context: autocast for fp16/bf16; for fp32 a shared no-op context
        (cheaper than a generator-based one on sub-millisecond steps)."""
        if self.mode == "fp32":
            return _NO_AUTOCAST
        dtype = torch.float16 if self.mode == "fp16" else torch.bfloat16
        return torch.autocast(self.device.type, dtype=dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (loss * self.scale if self.mode == "fp16" else loss).backward()

    def unscale_and_check(self, model: torch.nn.Module) -> bool:
        """Unscale gradients; True when this step must be skipped (overflow on any rank)."""
        if self.mode != "fp16":
            return False
        overflow = 0.0
        inv = 1.0 / self.scale
        for p in model.parameters():
            if p.grad is not None:
                p.grad.mul_(inv)
                if not torch.isfinite(p.grad).all():
                    overflow = 1.0
        flag = torch.tensor([overflow], device=self.device)
        return bool(self.dist.all_reduce_max(flag).item() > 0)

    def state_dict(self) -> dict[str, float | int]:
        """The dynamic loss scaler's state (a checkpoint carries it)."""
        return {
            "scale": self.scale,
            "clean_steps": self.clean_steps,
            "skipped_steps": self.skipped_steps,
        }

    def load_state_dict(self, state: dict[str, float | int]) -> None:
        self.scale = float(state["scale"])
        self.clean_steps = int(state["clean_steps"])
        self.skipped_steps = int(state["skipped_steps"])

    def update(self, skipped: bool) -> None:
        if self.mode != "fp16":
            return
        if skipped:
            self.skipped_steps += 1
            self.scale = max(self.scale / 2.0, 1.0)
            self.clean_steps = 0
            return
        self.clean_steps += 1
        if self.clean_steps >= self.window:
            self.scale = min(self.scale * 2.0, self.max_scale)
            self.clean_steps = 0
        assert math.isfinite(self.scale)
