"""``torch.nn.parallel.DistributedDataParallel`` as a scheme — the baseline practitioners use.

Collectives (all issued by DDP itself): a broadcast of rank 0's parameters and buffers when the
model is wrapped; during backward, one asynchronous ``all_reduce`` per gradient bucket
(``bucket_mb``) launched as soon as the bucket's gradients are ready, overlapping the rest of
backward; a broadcast of buffers (BatchNorm statistics) from rank 0 before every forward. With
``ddp_hook = powersgd`` the buckets go through PyTorch's own PowerSGD communication hook
(``rank``, ``warm_start``, ``min_compression_rate``, ``start_iter``).

DDP always averages gradients; ``algorithm.mode`` is ignored. (For plain SGD from identical
weights — task 2a — averaging the weights after the step is the same update.)

Accounting: a comm hook wraps DDP's default all-reduce (or the PowerSGD hook) to count the bucket
bytes (for PowerSGD: the compressed numel PyTorch reports, ×4 bytes) and to note when the last
bucket was handed to communication. What backward spends after that moment is waiting for
communication to finish (plus copying the averaged gradients back): the loop reports it as
*exposed* communication and keeps it out of ``backward``. The part of communication hidden behind
backward's computation is, by design, not counted as communication time.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as torch_powersgd

from mlbench.algorithms.base import Algorithm
from mlbench.algorithms.powersgd import PowerSGDConfig
from mlbench.config import param
from mlbench.errors import ConfigError

if TYPE_CHECKING:
    from mlbench.dist import DistContext


@dataclass
class DDPConfig(PowerSGDConfig):
    bucket_mb: float = param(25.0, open=True, minimum=0.001, help="DDP's bucket_cap_mb")
    ddp_hook: Literal["none", "powersgd"] = param(
        "none", help="communication hook (powersgd uses matrix_rank/warm_start/... above)"
    )


def _default_group() -> dist.ProcessGroup:
    return dist.distributed_c10d._get_default_group()


class DDP(Algorithm):
    name = "ddp"
    config_cls = DDPConfig
    cfg: DDPConfig
    overlaps = True

    def __init__(self, cfg: DDPConfig, dist_ctx: DistContext) -> None:
        super().__init__(cfg, dist_ctx)
        self._last_launch: float | None = None
        self._powersgd: Any = None
        self._wrapped: torch.nn.parallel.DistributedDataParallel | None = None

    @classmethod
    def check_config(cls, cfg: DDPConfig, world_size: int) -> None:
        if cfg.ddp_hook == "powersgd" and cfg.matrix_rank < 1:
            raise ConfigError(
                f"algorithm.matrix_rank must be ≥ 1 for PowerSGD, got {cfg.matrix_rank}"
            )

    def no_sync(self) -> contextlib.AbstractContextManager[None]:
        """Accumulation: DDP's own ``no_sync`` (gradients accumulate locally, no all-reduce)."""
        if self._wrapped is None:
            return contextlib.nullcontext()
        return self._wrapped.no_sync()

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.dist.world_size == 1:
            return model  # no process to talk to: plain local training
        device_ids = [self.dist.device.index] if self.dist.device.type == "cuda" else None
        wrapped = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=device_ids, bucket_cap_mb=self.cfg.bucket_mb
        )
        if self.cfg.ddp_hook == "powersgd":
            self._powersgd = torch_powersgd.PowerSGDState(
                process_group=None,
                matrix_approximation_rank=self.cfg.matrix_rank,
                start_powerSGD_iter=max(2, self.cfg.start_iter),
                min_compression_rate=self.cfg.min_compression_rate,
                warm_start=self.cfg.warm_start,
                random_seed=0,
            )
        wrapped.register_comm_hook(None, self._hook)
        self._wrapped = wrapped
        return wrapped

    # deliberately unannotated: DDP compares the annotations with the class objects
    # dist.GradBucket / torch.futures.Future[torch.Tensor], and postponed (string) annotations
    # never match
    def _hook(self, state, bucket):
        buffer = bucket.buffer()
        if self._powersgd is not None:
            before = self._powersgd.total_numel_after_compression
            fut = torch_powersgd.powerSGD_hook(self._powersgd, bucket)
            sent = self._powersgd.total_numel_after_compression - before
            # before start_powerSGD_iter the hook all-reduces the bucket uncompressed
            self._count(sent * buffer.element_size() if sent else self.nbytes(buffer))
        else:
            self._count(self.nbytes(buffer))
            fut = default_hooks.allreduce_hook(_default_group(), bucket)
        self._last_launch = time.perf_counter()
        return fut

    def setup(self, model: torch.nn.Module) -> None:
        # DDP broadcast rank 0's state when wrapping; only the dense size is needed here
        self.dense_bytes_per_step = sum(
            p.numel() * 4 for p in model.parameters() if p.requires_grad
        )

    def exposed_in_backward(self) -> float:
        if self._last_launch is None:
            return 0.0
        waited = time.perf_counter() - self._last_launch
        self._last_launch = None
        return waited

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        out["ddp_hook"] = self.cfg.ddp_hook
        return out
