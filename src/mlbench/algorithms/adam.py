"""Centralized Adam: Adam applied to all-reduced (averaged) gradients.

Collectives: exactly those of ``allreduce`` in mode ``gradients`` (broadcast of rank 0's weights
in ``setup``; one synchronous ``all_reduce`` per gradient bucket — or per layer, or overlapped with
backward — in ``reduce_gradients``). Because every rank applies the same Adam update to the same
averaged gradient, all ranks hold identical weights and optimizer state: the result equals
single-process Adam on the concatenated batch.

The task's lr schedule keeps its shape (scaling with k, warm-up, plateau) but is rescaled so its
base lr becomes ``algorithm.adam_lr``.

Checkpoint: nothing beyond :class:`AllReduce`'s counters. The Adam this scheme builds in
:meth:`build_optimizer` *is* the loop's optimizer, so its moments and step counts are in the
loop's ``optimizer.state_dict()`` (and a resumed run builds the same Adam before loading it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from mlbench.algorithms.allreduce import AllReduce, BucketConfig
from mlbench.config import param
from mlbench.errors import ConfigError

if TYPE_CHECKING:
    from mlbench.dist import DistContext


@dataclass
class AdamConfig(BucketConfig):
    adam_lr: float = param(1e-3, minimum=0, help="learning rate (scaled like the task's)")
    adam_betas: tuple[float, ...] = param((0.9, 0.999), help="(beta1, beta2)")
    adam_eps: float = param(1e-8, minimum=0, help="epsilon")
    adam_weight_decay: float = param(0.0, minimum=0, help="L2 weight decay (torch.optim.Adam)")
    overlap: bool = param(
        False, open=True, help="start each gradient's all-reduce from a backward hook (async)"
    )


class CentralizedAdam(AllReduce):
    name = "adam"
    config_cls = AdamConfig
    cfg: AdamConfig

    def __init__(self, cfg: AdamConfig, dist_ctx: DistContext) -> None:
        super().__init__(cfg, dist_ctx)  # gradients are averaged (AllReduce's default mode)

    @classmethod
    def check_config(cls, cfg: AdamConfig, world_size: int) -> None:
        if len(cfg.adam_betas) != 2 or not all(0.0 <= b < 1.0 for b in cfg.adam_betas):
            raise ConfigError("algorithm.adam_betas must be two values in [0, 1), e.g. 0.9,0.999")
        if cfg.adam_lr <= 0:
            raise ConfigError("algorithm.adam_lr must be positive")

    def build_optimizer(
        self, model: torch.nn.Module, task_optimizer: torch.optim.Optimizer
    ) -> torch.optim.Optimizer:
        beta1, beta2 = self.cfg.adam_betas
        return torch.optim.Adam(
            model.parameters(),
            lr=self.cfg.adam_lr,
            betas=(beta1, beta2),
            eps=self.cfg.adam_eps,
            weight_decay=self.cfg.adam_weight_decay,
        )

    def lr_scale(self, cfg: Any) -> float:
        base = getattr(getattr(cfg, "optim", None), "lr", None)
        return self.cfg.adam_lr / base if base else 1.0
