"""The algorithm contract (DESIGN §4).

The loop calls, in this order, every step::

    data → forward → backward → reduce_gradients() → optimizer.step() → after_step()

and times both hooks as the ``communication`` phase. A scheme issues its collectives in these
hooks (and in ``setup`` once before training). With world size 1 every scheme must degenerate to
plain local training — the caller never branches on world size. Each scheme counts the bytes it
hands to collectives (payload bytes, see docs/timing.md) in ``bytes_sent``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

    from mlbench.dist import DistContext
    from mlbench.tasks.base import AlgorithmConfig


class Algorithm(ABC):
    name: ClassVar[str]

    def __init__(self, cfg: AlgorithmConfig, dist: DistContext) -> None:
        self.cfg = cfg
        self.dist = dist
        self.bytes_sent = 0
        self.collectives = 0

    @classmethod
    def check_config(cls, cfg: AlgorithmConfig, world_size: int) -> None:
        """Reject bad options before any process starts (raise ConfigError)."""
        return None

    @abstractmethod
    def setup(self, model: torch.nn.Module) -> None:
        """Bring all ranks to the same starting point (broadcast or average)."""

    def reduce_gradients(self, model: torch.nn.Module) -> None:  # noqa: B027
        """After backward, before the optimizer step."""

    def after_step(self, model: torch.nn.Module) -> None:  # noqa: B027
        """After the optimizer step."""

    def stats(self) -> dict[str, Any]:
        return {"bytes_sent": self.bytes_sent, "collectives": self.collectives}
