"""Local SGD: H local optimizer steps, then model averaging.

Collectives: ``setup`` broadcasts rank 0's parameters and buffers; ``after_step`` issues, every
``algorithm.local_steps`` (H) steps, one synchronous ``all_reduce`` per flattened bucket of
parameters and floating-point buffers (model averaging); the other H−1 steps communicate nothing.
``reduce_gradients`` does nothing — each rank steps on its own gradients. H = 1 is model
averaging after every step (the 2a reference scheme).

Checkpoint: ``steps`` (where the run is in its H-step period, so a resumed run averages at the
same steps) and ``averages``, plus the counters of :class:`AllReduce`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from mlbench.algorithms.allreduce import AllReduce, BucketConfig
from mlbench.algorithms.base import Algorithm
from mlbench.config import param
from mlbench.errors import ConfigError

if TYPE_CHECKING:
    from mlbench.dist import DistContext


@dataclass
class LocalSGDConfig(BucketConfig):
    local_steps: int = param(4, help="H local steps between model averages")


class LocalSGD(AllReduce):
    name = "localsgd"
    config_cls = LocalSGDConfig
    cfg: LocalSGDConfig

    def __init__(self, cfg: LocalSGDConfig, dist_ctx: DistContext) -> None:
        super().__init__(cfg, dist_ctx)
        self.steps = 0
        self.averages = 0

    @property
    def overlaps(self) -> bool:  # type: ignore[override]
        return False

    @classmethod
    def check_config(cls, cfg: LocalSGDConfig, world_size: int) -> None:
        if cfg.local_steps < 1:
            raise ConfigError(f"algorithm.local_steps must be ≥ 1, got {cfg.local_steps}")

    def setup(self, model: torch.nn.Module) -> None:
        Algorithm.setup(self, model)  # broadcast rank 0's state; never AllReduce's overlap hooks

    def reduce_gradients(self, model: torch.nn.Module) -> None:
        return None

    def after_step(self, model: torch.nn.Module) -> None:
        self.steps += 1
        if self.steps % self.cfg.local_steps == 0:
            with torch.no_grad():
                self.average(self.state_tensors(model))
            self.averages += 1

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "steps": self.steps, "averages": self.averages}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.steps = int(state["steps"])
        self.averages = int(state["averages"])

    def stats(self) -> dict[str, object]:
        return {**super().stats(), "local_steps": self.cfg.local_steps, "averages": self.averages}
