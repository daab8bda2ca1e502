"""Learning-rate schedules: the protocol the loop drives, and the common shapes tasks use.

It sits in the bottom layer (DESIGN §3) so a task can build or bring its own schedule (inverse-sqrt
warm-up, exponential warm-up + step decay, an NT-ASGD switch) without importing the loop.

:class:`LRSchedule` is the reference schedule shape of tasks 1a and 2a: linear warm-up, then
reduce-on-plateau on validation loss. Warm-up is applied per step (linear from
the base lr to the scaled lr); once warm-up is over, torch's ``ReduceLROnPlateau`` owns the lr and
is stepped at each evaluation.
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Schedule(Protocol):
    """What the loop calls. ``on_step(step)`` before optimizer step ``step`` (0-based) sets the lr;
    ``on_eval(val_loss, step)`` after each evaluation (plateau rules, switches); ``lr`` is the
    current lr of the first parameter group, as logged."""

    def on_step(self, step: int) -> None: ...

    def on_eval(self, val_loss: float, step: int) -> None: ...

    @property
    def lr(self) -> float: ...


def scaled_lr(base: float, world_size: int, rule: str, cap: int | None) -> float:
    """The reference's lr scaling with k workers: ``linear`` → base·min(k, cap); ``none`` → base."""
    if rule == "none":
        return base
    if rule == "linear":
        return base * min(world_size, cap if cap is not None else world_size)
    if rule == "sqrt":
        return base * math.sqrt(min(world_size, cap if cap is not None else world_size))
    raise ValueError(f"unknown lr scaling rule {rule!r}")


def warmup_epochs(rule: str, fixed: float, world_size: int) -> float:
    if rule == "none":
        return 0.0
    if rule == "log2k":
        return math.log2(world_size) if world_size > 1 else 0.0
    if rule == "epochs":
        return fixed
    raise ValueError(f"unknown warm-up rule {rule!r}")


class LRSchedule:
    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        start_lr: float,
        peak_lr: float,
        warmup_steps: int,
        plateau: bool,
        factor: float,
        patience: int,
        threshold: float,
        min_lr: float,
    ) -> None:
        self.optimizer = optimizer
        self.start_lr, self.peak_lr = start_lr, peak_lr
        self.warmup_steps = warmup_steps
        self._plateau = (
            torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer,
                mode="min",
                factor=factor,
                patience=patience,
                threshold=threshold,
                threshold_mode="abs",
                min_lr=min_lr,
            )
            if plateau
            else None
        )
        self._set(start_lr if warmup_steps > 0 else peak_lr)

    def _set(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def on_step(self, step: int) -> None:
        """Called before optimizer step ``step`` (0-based)."""
        if step < self.warmup_steps:
            frac = step / self.warmup_steps
            self._set(self.start_lr + frac * (self.peak_lr - self.start_lr))
        elif step == self.warmup_steps and self.warmup_steps > 0:
            self._set(self.peak_lr)

    def on_eval(self, val_loss: float, step: int) -> None:
        if self._plateau is not None and step >= self.warmup_steps:
            self._plateau.step(val_loss)
