"""Synchronous all-reduce averaging of gradients or of weights, in flattened buckets.

Collectives (all synchronous, on the default process group):

* ``setup``: mode ``gradients`` broadcasts parameters and buffers from rank 0; mode ``weights``
  all-reduces (averages) them once, as the reference 2a implementation does.
* ``reduce_gradients`` (mode ``gradients``): one ``all_reduce(SUM)`` per bucket of flattened
  gradients, then scaled by 1/k. Buckets are filled in parameter order up to ``bucket_mb``.
* ``after_step`` (mode ``weights``): the same on parameters and floating-point buffers, i.e. model
  averaging after the local step.

World size 1 issues no collectives and changes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from mlbench.algorithms.base import Algorithm

if TYPE_CHECKING:
    from mlbench.dist import DistContext
    from mlbench.tasks.base import AlgorithmConfig


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

    def __init__(self, cfg: AlgorithmConfig, dist_ctx: DistContext) -> None:
        super().__init__(cfg, dist_ctx)
        self._flat: dict[int, torch.Tensor] = {}

    def _average(self, tensors: list[torch.Tensor]) -> None:
        """Average ``tensors`` in place across ranks, bucket by bucket."""
        k = self.dist.world_size
        if k == 1 or not tensors:
            return
        for i, bucket in enumerate(make_buckets(tensors, self.cfg.bucket_mb * 1e6)):
            numel = sum(t.numel() for t in bucket)
            flat = self._flat.get(i)
            if flat is None or flat.numel() != numel or flat.dtype != bucket[0].dtype:
                flat = torch.empty(numel, dtype=bucket[0].dtype, device=bucket[0].device)
                self._flat[i] = flat
            torch.cat([t.reshape(-1) for t in bucket], out=flat)
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            flat.mul_(1.0 / k)
            offset = 0
            for t in bucket:
                t.copy_(flat[offset : offset + t.numel()].view_as(t))
                offset += t.numel()
            self.bytes_sent += flat.numel() * flat.element_size()
            self.collectives += 1

    @staticmethod
    def _state_tensors(model: torch.nn.Module) -> list[torch.Tensor]:
        params = [p.data for p in model.parameters()]
        buffers = [b for b in model.buffers() if b.is_floating_point()]
        return params + buffers

    def setup(self, model: torch.nn.Module) -> None:
        if self.dist.world_size == 1:
            return
        if self.cfg.mode == "weights":
            with torch.no_grad():
                self._average(self._state_tensors(model))
        else:
            for t in list(model.parameters()) + list(model.buffers()):
                dist.broadcast(t.data, src=0)
                self.bytes_sent += t.numel() * t.element_size()
                self.collectives += 1

    def reduce_gradients(self, model: torch.nn.Module) -> None:
        if self.cfg.mode != "gradients":
            return
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        self._average(grads)

    def after_step(self, model: torch.nn.Module) -> None:
        if self.cfg.mode != "weights":
            return
        with torch.no_grad():
            self._average(self._state_tensors(model))
