"""Centralized Adam: Adam applied to all-reduced (averaged) gradients.

Collectives: exactly those of ``allreduce`` in mode ``gradients`` (broadcast of rank 0's weights
in ``setup``; one synchronous ``all_reduce`` per gradient bucket — or per layer, or overlapped with
backward — in ``reduce_gradients``). Because every rank applies the same Adam update to the same
averaged gradient, all ranks hold identical weights and optimizer state: the result equals
single-process Adam on the concatenated batch.

The task's lr schedule keeps its shape (scaling with k, warm-up, plateau) but is rescaled so its
base lr becomes ``algorithm.adam_lr``.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch

from mlbench.algorithms.allreduce import AllReduce
from mlbench.errors import ConfigError

if TYPE_CHECKING:
    from mlbench.dist import DistContext
    from mlbench.tasks.base import AlgorithmConfig, RunConfig


class CentralizedAdam(AllReduce):
    name = "adam"
    options = (
        "adam_lr",
        "adam_betas",
        "adam_eps",
        "adam_weight_decay",
        *AllReduce.options,
    )

    def __init__(self, cfg: AlgorithmConfig, dist_ctx: DistContext) -> None:
        super().__init__(dataclasses.replace(cfg, mode="gradients"), dist_ctx)

    @classmethod
    def check_config(cls, cfg: AlgorithmConfig, world_size: int) -> None:
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

    def lr_scale(self, cfg: RunConfig) -> float:
        base = getattr(getattr(cfg, "optim", None), "lr", None)
        return self.cfg.adam_lr / base if base else 1.0
