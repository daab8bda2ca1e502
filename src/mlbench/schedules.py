"""Learning-rate schedules: the protocol the loop drives, and the common shapes tasks use.

It sits in the bottom layer (DESIGN §3) so a task can build or bring its own schedule (inverse-sqrt
warm-up, exponential warm-up + step decay, an NT-ASGD switch) without importing the loop.

:class:`NTASGDSchedule` with :class:`AveragingSGD` is task 3a's: a constant lr, then averaged
weights from a trigger on the validation loss.

:class:`LRSchedule` is the reference schedule shape of tasks 1a and 2a: linear warm-up, then
reduce-on-plateau on validation loss. Warm-up is applied per step (linear from
the base lr to the scaled lr); once warm-up is over, torch's ``ReduceLROnPlateau`` owns the lr and
is stepped at each evaluation.

:class:`WarmupMultiStep` is task 1b's: the same linear warm-up (:func:`linear_warmup`), then
×factor at fixed milestones (ImageNet's step decay at epochs 30, 60, 80).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator
from typing import Any, Protocol, runtime_checkable

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


def linear_warmup(step: int, warmup_steps: int, start: float, peak: float) -> float:
    """The lr before optimizer step ``step`` of a linear warm-up from ``start`` (step 0) that
    reaches ``peak`` at ``warmup_steps``; ``peak`` from then on."""
    if step >= warmup_steps:
        return peak
    return start + step / warmup_steps * (peak - start)


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
            self._set(linear_warmup(step, self.warmup_steps, self.start_lr, self.peak_lr))
        elif step == self.warmup_steps and self.warmup_steps > 0:
            self._set(self.peak_lr)

    def on_eval(self, val_loss: float, step: int) -> None:
        if self._plateau is not None and step >= self.warmup_steps:
            self._plateau.step(val_loss)

    def state_dict(self) -> dict[str, Any]:
        """The plateau rule's counters (best loss, bad evaluations, cooldown); the warm-up is a
        function of the step and the lr itself lives in the optimizer's param groups."""
        return {"plateau": self._plateau.state_dict() if self._plateau is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self._plateau is not None and state["plateau"] is not None:
            self._plateau.load_state_dict(state["plateau"])


class AveragingSGD(torch.optim.SGD):
    """Plain SGD that, once :meth:`start_averaging` is called, also keeps the running mean of the
    weights after every step (the "A" of NT-ASGD, task 3a).

    Why not ``torch.optim.ASGD``: it reads the lr for its averaging from the step before, so the
    per-window lr factor of 3a lands one step late. Here a step is SGD's step and the mean is
    ``ax += (p − ax)/n`` after it — exactly the mean of the n weights seen since the switch (the
    reference ASGD with ``t0=0, lambd=0``). The mean lives in the optimizer's state (``"ax"``)
    and the count in the param groups, so a checkpoint carries both.
    """

    def __init__(self, params: Iterable[Any], **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        for group in self.param_groups:
            group.setdefault("averaging", False)
            group.setdefault("averaged_steps", 0)

    @property
    def averaged_steps(self) -> int:
        return int(self.param_groups[0]["averaged_steps"])

    @property
    def averaging(self) -> bool:
        return bool(self.param_groups[0]["averaging"])

    def start_averaging(self) -> None:
        """Average the weights after every step from the next one on."""
        for group in self.param_groups:
            group["averaging"] = True

    def step(self, closure: Any = None) -> Any:
        loss = super().step(closure)
        with torch.no_grad():
            for group in self.param_groups:
                if not group["averaging"]:
                    continue
                group["averaged_steps"] += 1
                n = group["averaged_steps"]
                for p in group["params"]:
                    state = self.state[p]
                    if n == 1:
                        state["ax"] = p.detach().clone()
                    else:
                        state["ax"].add_(p.detach() - state["ax"], alpha=1.0 / n)
        return loss

    @contextlib.contextmanager
    def swap_in_average(self) -> Iterator[None]:
        """The averaged weights in the model's parameters for the ``with`` body, then the
        trained ones back (bit for bit)."""
        params = [p for g in self.param_groups for p in g["params"] if "ax" in self.state[p]]
        saved = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p in params:
                p.copy_(self.state[p]["ax"])
        try:
            yield
        finally:
            with torch.no_grad():
                for p, kept in zip(params, saved, strict=True):
                    p.copy_(kept)


class NTASGDSchedule:
    """A constant lr, and the non-monotone trigger that starts weight averaging (the Schedule
    protocol: ``on_step``, ``on_eval``, ``lr``).

    ``nonmono``: switch at an evaluation when more than ``nonmono`` losses are recorded and the
    current is above the minimum of all but the last ``nonmono`` (0: of all of them); None: never.
    ``switch_at_eval``: switch at that evaluation whatever the losses (1-based).
    The losses are the all-reduced validation losses, the same on every rank.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        lr: float,
        nonmono: int | None,
        switch_at_eval: int | None = None,
    ) -> None:
        self.optimizer = optimizer
        self.nonmono, self.switch_at_eval = nonmono, switch_at_eval
        self.losses: list[float] = []
        #: the optimizer step count when averaging started (None: not yet)
        self.switched_at: int | None = None
        for group in optimizer.param_groups:
            group["lr"] = lr

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def on_step(self, step: int) -> None:
        return None

    def triggered(self, val_loss: float) -> bool:
        """Whether ``val_loss`` (not yet recorded) triggers the switch."""
        if self.switch_at_eval is not None and len(self.losses) + 1 >= self.switch_at_eval:
            return True
        if self.nonmono is None or len(self.losses) <= self.nonmono:
            return False
        earlier = self.losses[: len(self.losses) - self.nonmono]
        return val_loss > min(earlier)

    def state_dict(self) -> dict[str, Any]:
        """The trigger's memory: the validation losses seen and when averaging started."""
        return {"losses": list(self.losses), "switched_at": self.switched_at}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.losses = [float(v) for v in state["losses"]]
        self.switched_at = None if state["switched_at"] is None else int(state["switched_at"])

    def on_eval(self, val_loss: float, step: int) -> None:
        if self.switched_at is not None:
            return
        if self.triggered(val_loss):
            self.switched_at = step
            if isinstance(self.optimizer, AveragingSGD):  # not so under a scheme's own optimizer
                self.optimizer.start_averaging()
        self.losses.append(val_loss)


class StepFunction:
    """A schedule whose lr is a function of the step alone (:meth:`lr_at`), set before each
    step. ``counts_applied_steps``: the loop passes the number of *applied* updates, so a step
    skipped on an fp16 overflow does not advance the schedule (as in both references)."""

    counts_applied_steps = True
    optimizer: torch.optim.Optimizer

    def lr_at(self, step: int) -> float:
        raise NotImplementedError

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def on_step(self, step: int) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(step)

    def on_eval(self, val_loss: float, step: int) -> None:
        return None


class WarmupStepDecay(StepFunction):
    """Task 4a's schedule (MLPerf GNMT): exponential warm-up, then step decay.

    Warm-up over ``warmup_steps`` from ``warmup_start·lr``: lr·s^(warmup_steps − step) with
    s = warmup_start^(−1/warmup_steps) (so 0.01·lr at step 0, lr at ``warmup_steps``). Then, from
    ``decay_start`` (40 % of the planned steps) on, ×``factor`` once, and again every
    ``decay_interval`` (5 % of the plan), ``decay_steps`` times at most. Counted in applied
    updates (:class:`StepFunction`).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        lr: float,
        warmup_steps: int,
        warmup_start: float,
        decay_start: int,
        decay_interval: int,
        decay_steps: int,
        factor: float,
    ) -> None:
        self.optimizer, self.base_lr = optimizer, lr
        self.warmup_steps, self.warmup_start = warmup_steps, warmup_start
        self.decay_start, self.decay_interval = decay_start, max(1, decay_interval)
        self.decay_steps, self.factor = decay_steps, factor
        self.on_step(0)

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            left = (self.warmup_steps - step) / self.warmup_steps
            return self.base_lr * self.warmup_start**left
        if step < self.decay_start:
            return self.base_lr
        n = min((step - self.decay_start) // self.decay_interval + 1, self.decay_steps)
        return self.base_lr * self.factor**n


class InverseSqrt(StepFunction):
    """Task 4b's schedule (the Transformer's): linear warm-up from 0 over ``warmup_steps``, then
    lr·√(warmup_steps/n). ``n`` is the 1-based count of applied updates, so the first update
    uses lr/warmup_steps rather than a wasted lr of 0."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, lr: float, warmup_steps: int) -> None:
        self.optimizer, self.base_lr, self.warmup_steps = optimizer, lr, max(1, warmup_steps)
        self.on_step(0)

    def lr_at(self, step: int) -> float:
        n = step + 1
        if n <= self.warmup_steps:
            return self.base_lr * n / self.warmup_steps
        return self.base_lr * math.sqrt(self.warmup_steps / n)


class WarmupMultiStep(StepFunction):
    """Task 1b's schedule (Goyal et al. 2017, the ImageNet baseline MLPerf's reference follows):
    linear warm-up from ``start_lr`` to ``peak_lr`` over ``warmup_steps``, then ``peak_lr`` ×
    ``factor`` for every milestone passed (``milestones``: steps, ascending; ImageNet's are
    epochs 30, 60, 80 of 90, converted by the task). A milestone inside the warm-up already
    counts once the warm-up is over. A function of the step alone, counted in applied updates
    (:class:`StepFunction`), so a checkpoint needs no state.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        start_lr: float,
        peak_lr: float,
        warmup_steps: int,
        milestones: Iterable[int],
        factor: float,
    ) -> None:
        self.optimizer = optimizer
        self.start_lr, self.peak_lr, self.warmup_steps = start_lr, peak_lr, warmup_steps
        self.milestones = sorted(milestones)
        self.factor = factor
        self.on_step(0)

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return linear_warmup(step, self.warmup_steps, self.start_lr, self.peak_lr)
        passed = sum(1 for m in self.milestones if step >= m)
        return self.peak_lr * self.factor**passed
