"""Config sections and builders shared by tasks that train with SGD + plateau schedules, and the
validation of the image classifiers (1a, 1b)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from mlbench.config import param
from mlbench.tasks.base import RunConfig, Task

if TYPE_CHECKING:
    import torch

    from mlbench.dist import DistContext
    from mlbench.schedules import LRSchedule


@dataclass
class SGDConfig:
    """SGD with the reference lr scaling, warm-up and reduce-on-plateau schedule."""

    lr: float = param(0.1, minimum=0, help="base learning rate (for one worker)")
    lr_scaling: Literal["linear", "sqrt", "none"] = param(
        "linear", help="how the lr grows with k workers"
    )
    lr_scaling_cap: int | None = param(None, minimum=1, help="k is capped at this for scaling")
    momentum: float = param(0.0, minimum=0, maximum=1)
    nesterov: bool = param(False)
    weight_decay: float = param(0.0, minimum=0)
    warmup: Literal["none", "log2k", "epochs"] = param(
        "none", help="linear warm-up from lr to the scaled lr over log2(k) or warmup_epochs epochs"
    )
    warmup_epochs: float = param(0.0, minimum=0, help="used when warmup = 'epochs'")
    schedule: Literal["plateau", "none"] = param("plateau", help="reduce-on-plateau on val loss")
    plateau_factor: float = param(0.5, minimum=0, maximum=1)
    plateau_patience: int = param(1, minimum=0)
    plateau_threshold: float = param(0.01, minimum=0, help="absolute improvement threshold")
    min_lr: float = param(0.0, minimum=0)


def build_sgd(cfg: SGDConfig, model: torch.nn.Module, world_size: int) -> torch.optim.Optimizer:
    import torch

    from mlbench.schedules import scaled_lr

    return torch.optim.SGD(
        model.parameters(),
        lr=scaled_lr(cfg.lr, world_size, cfg.lr_scaling, cfg.lr_scaling_cap),
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        weight_decay=cfg.weight_decay,
    )


def build_sgd_schedule(
    cfg: SGDConfig,
    optimizer: torch.optim.Optimizer,
    world_size: int,
    steps_per_epoch: int,
    lr_scale: float = 1.0,
) -> LRSchedule:
    from mlbench.schedules import LRSchedule, scaled_lr, warmup_epochs

    peak = scaled_lr(cfg.lr, world_size, cfg.lr_scaling, cfg.lr_scaling_cap)
    epochs = warmup_epochs(cfg.warmup, cfg.warmup_epochs, world_size)
    return LRSchedule(
        optimizer,
        start_lr=cfg.lr * lr_scale,
        peak_lr=peak * lr_scale,
        warmup_steps=math.ceil(epochs * steps_per_epoch),
        plateau=cfg.schedule == "plateau",
        factor=cfg.plateau_factor,
        patience=cfg.plateau_patience,
        threshold=cfg.plateau_threshold,
        min_lr=cfg.min_lr * lr_scale,
    )


class SGDTask(Task):
    """A task whose config has an ``optim: SGDConfig`` section (1a, 2a)."""

    @staticmethod
    def _optim(cfg: RunConfig) -> SGDConfig:
        optim = getattr(cfg, "optim", None)
        assert isinstance(optim, SGDConfig), "SGDTask configs need an optim: SGDConfig section"
        return optim

    def build_optimizer(
        self, cfg: RunConfig, model: torch.nn.Module, world_size: int
    ) -> torch.optim.Optimizer:
        return build_sgd(self._optim(cfg), model, world_size)

    def build_schedule(
        self,
        cfg: RunConfig,
        optimizer: torch.optim.Optimizer,
        world_size: int,
        steps_per_epoch: int,
        lr_scale: float = 1.0,
    ) -> LRSchedule:
        return build_sgd_schedule(
            self._optim(cfg), optimizer, world_size, steps_per_epoch, lr_scale
        )


def classification_metrics(model: torch.nn.Module, val: Any, dist: DistContext) -> dict[str, float]:
    """Cross-entropy loss, top-1 and top-5 (%) over every validation image of every rank.

    ``val`` yields ``(inputs, labels)`` ready for the model. The per-rank counts are summed over
    ranks before dividing, so the figures are over the whole validation set for any k (shards
    that differ in size by one image included), never a mean of per-rank ratios.
    """
    import torch

    from mlbench.metrics.classification import global_sums, topk_correct

    sums = [0.0, 0.0, 0.0, 0.0]  # loss·n, top1 hits, top5 hits, n
    with torch.no_grad():
        for x, y in val:
            logits = model(x)
            loss = torch.nn.functional.cross_entropy(logits, y, reduction="sum")
            top1, top5 = topk_correct(logits, y, (1, 5))
            for i, v in enumerate((float(loss), top1, top5, len(y))):
                sums[i] += v
    loss_sum, top1_sum, top5_sum, n = global_sums(sums, dist)
    n = max(n, 1.0)
    return {
        "loss": loss_sum / n,
        "top1": 100.0 * top1_sum / n,
        "top5": 100.0 * top5_sum / n,
        "samples": n,
    }
