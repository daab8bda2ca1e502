"""Synchronous all-reduce averaging of gradients or of weights.

Collectives (default process group):

* ``setup``: mode ``gradients`` broadcasts parameters and buffers from rank 0; mode ``weights``
  all-reduces (averages) them once, as the reference 2a implementation does.
* mode ``gradients``, ``reduce_gradients``: ``all_reduce(SUM)`` then ×1/k, on gradients —
  by default flattened into buckets of ``bucket_mb`` (one collective per bucket, synchronous).
  The gradients *are* views into those buckets (set up once, kept by ``zero_grad``, which zeroes
  the buckets instead of dropping the gradients), so backward accumulates straight into the
  buffer that is all-reduced: no gather before the collective and no scatter after it. Without
  that, the two copies cost ~0.7 ms per step on ResNet-20, a third of the collective itself
  (benchmarks/comm_efficiency.py). If anything replaced a gradient tensor (a caller's own
  ``optimizer.zero_grad()``), that step falls back to gather/scatter and the views are re-made;
  with ``per_layer`` one collective per parameter tensor; with ``overlap`` the all-reduce of each
  gradient is started *asynchronously* from a hook as soon as backward has produced it, and
  ``reduce_gradients`` only waits for the outstanding ones (the wait is the exposed
  communication; the part hidden behind backward is not counted as communication time).
* mode ``weights``, ``after_step``: the same on parameters and floating-point buffers, i.e. model
  averaging after the local step.

World size 1 issues no collectives and changes nothing.

Checkpoint (:meth:`state_dict`): the byte/collective counters and ``view_fallbacks``. Nothing
else survives a step: the bucket buffers are zeroed before every backward (``zero_grad``) and
re-made by ``setup`` in a fresh process, the overlap hooks leave nothing pending once
``reduce_gradients`` returns, and the optimizer's state (momentum; centralized Adam's moments)
is the optimizer's own, saved by the loop with ``optimizer.state_dict()``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from mlbench.algorithms.base import Algorithm
from mlbench.config import SchemeConfig, param

if TYPE_CHECKING:
    from mlbench.dist import DistContext


@dataclass
class BucketConfig(SchemeConfig):
    """How averaged tensors are packed into collectives (every all-reduce based scheme)."""

    bucket_mb: float = param(25.0, open=True, minimum=0.001, help="flattened bucket size in MB")
    per_layer: bool = param(
        False, open=True, help="one collective per parameter tensor, no buckets"
    )


@dataclass
class AllReduceConfig(BucketConfig):
    mode: Literal["gradients", "weights"] = param(
        "gradients", help="average gradients (before the step) or weights (after)"
    )
    overlap: bool = param(
        False, open=True, help="start each gradient's all-reduce from a backward hook (async)"
    )


def make_buckets(tensors: list[torch.Tensor], bucket_bytes: float) -> list[list[torch.Tensor]]:
    """Group tensors (in order, same dtype/device per bucket) into buckets of ≤ bucket_bytes."""
    buckets: list[list[torch.Tensor]] = []
    size = 0.0
    for t in tensors:
        nbytes = t.numel() * t.element_size()
        current = buckets[-1] if buckets else None
        if (
            current is None
            or size + nbytes > bucket_bytes
            or current[0].dtype != t.dtype
            or current[0].device != t.device
        ):
            buckets.append([t])
            size = nbytes
        else:
            current.append(t)
            size += nbytes
    return buckets


class AllReduce(Algorithm):
    name = "allreduce"
    config_cls: ClassVar[type[SchemeConfig]] = AllReduceConfig

    def __init__(self, cfg: BucketConfig, dist_ctx: DistContext) -> None:
        super().__init__(cfg, dist_ctx)
        # subclasses' sections (adam, localsgd) share the buckets but not these two options
        self.mode: str = getattr(cfg, "mode", "gradients")
        self.overlap: bool = getattr(cfg, "overlap", False)
        self._sync = True
        self._flat: dict[int, torch.Tensor] = {}
        self._pending: list[tuple[Any, torch.Tensor]] = []
        self._hooks: list[Any] = []
        # bucket views: (parameters, flat buffer, views) per bucket, when gradients live there
        self._views: list[tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor]]] = []
        self.view_fallbacks = 0

    @property
    def overlaps(self) -> bool:  # type: ignore[override]
        return self.overlap and self.mode == "gradients"

    # ------------------------------------------------------------------ averaging
    def average(self, tensors: list[torch.Tensor]) -> None:
        """Average ``tensors`` in place across ranks (per layer or in flattened buckets)."""
        k = self.dist.world_size
        if k == 1 or not tensors:
            return
        if self.cfg.per_layer:
            for t in tensors:
                self.all_reduce(t)
                t.mul_(1.0 / k)
            return
        for i, bucket in enumerate(make_buckets(tensors, self.cfg.bucket_mb * 1e6)):
            numel = sum(t.numel() for t in bucket)
            flat = self._flat.get(i)
            if flat is None or flat.numel() != numel or flat.dtype != bucket[0].dtype:
                flat = torch.empty(numel, dtype=bucket[0].dtype, device=bucket[0].device)
                self._flat[i] = flat
            torch.cat([t.reshape(-1) for t in bucket], out=flat)
            self.all_reduce(flat)
            flat.mul_(1.0 / k)
            offset = 0
            for t in bucket:
                t.copy_(flat[offset : offset + t.numel()].view_as(t))
                offset += t.numel()

    @staticmethod
    def state_tensors(model: torch.nn.Module) -> list[torch.Tensor]:
        params = [p.data for p in model.parameters()]
        buffers = [b for b in model.buffers() if b.is_floating_point()]
        return params + buffers

    # ------------------------------------------------------------------ hooks
    def setup(self, model: torch.nn.Module) -> None:
        if self.mode == "weights":
            self.dense_bytes_per_step = sum(
                p.numel() * 4 for p in model.parameters() if p.requires_grad
            )
            with torch.no_grad():
                self.average(self.state_tensors(model))
        else:
            super().setup(model)
        if self.overlaps and self.dist.world_size > 1:
            for p in model.parameters():
                if p.requires_grad:
                    self._hooks.append(p.register_post_accumulate_grad_hook(self._launch))
        elif self.mode == "gradients" and not self.cfg.per_layer and self.dist.world_size > 1:
            params: list[torch.Tensor] = [p for p in model.parameters() if p.requires_grad]
            for bucket in make_buckets(params, self.cfg.bucket_mb * 1e6):
                flat = torch.zeros(
                    sum(p.numel() for p in bucket), dtype=bucket[0].dtype, device=bucket[0].device
                )
                views = [
                    v.view_as(p)
                    for v, p in zip(flat.split([p.numel() for p in bucket]), bucket, strict=True)
                ]
                self._views.append((bucket, flat, views))
            self._attach_views()

    def _attach_views(self) -> None:
        """(Re-)make every gradient the view into its bucket (after a zeroing: values are 0)."""
        for params, _, views in self._views:
            for p, v in zip(params, views, strict=True):
                if p.grad is not v:
                    p.grad = v

    def _views_intact(self) -> bool:
        return all(
            p.grad is v
            for params, _, views in self._views
            for p, v in zip(params, views, strict=True)
        )

    def zero_grad(self, optimizer: torch.optim.Optimizer) -> None:
        if not self._views:
            return super().zero_grad(optimizer)
        for _, flat, _ in self._views:
            flat.zero_()
        self._attach_views()

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Accumulation: the backward hooks launch nothing until the last micro-batch."""
        self._sync = False
        try:
            yield
        finally:
            self._sync = True

    def _launch(self, p: torch.Tensor) -> None:
        """Backward hook: start this gradient's all-reduce without waiting for it."""
        assert p.grad is not None
        if not self._sync:
            return
        self._pending.append((self.all_reduce(p.grad, async_op=True), p.grad))

    def reduce_gradients(self, model: torch.nn.Module) -> None:
        if self.mode != "gradients" or self.dist.world_size == 1:
            return
        if self.overlaps and self.dist.world_size > 1:
            k = self.dist.world_size
            for work, grad in self._pending:
                work.wait()
                grad.mul_(1.0 / k)
            self._pending.clear()
            return
        if self._views and self._views_intact():
            k = self.dist.world_size
            for _, flat, _ in self._views:
                self.all_reduce(flat)
                flat.mul_(1.0 / k)
            return
        if self._views:
            self.view_fallbacks += 1
        self.average([p.grad for p in model.parameters() if p.grad is not None])

    def after_step(self, model: torch.nn.Module) -> None:
        if self.mode != "weights" or self.dist.world_size == 1:
            return
        with torch.no_grad():
            self.average(self.state_tensors(model))

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "view_fallbacks": self.view_fallbacks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.view_fallbacks = int(state["view_fallbacks"])
