"""Gradients as one flat vector: the shape compressing schemes (top-k, sign, ...) work on."""

from __future__ import annotations

from typing import Any

import torch

from mlbench.algorithms.base import Algorithm
from mlbench.algorithms.snapshot import cpu_copy, restore


def grad_params(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters whose gradients a scheme reduces, in ``model.parameters()`` order."""
    return [p for p in model.parameters() if p.requires_grad]


def flatten_grads(params: list[torch.nn.Parameter]) -> torch.Tensor:
    """All gradients as one new fp32 vector (zeros for a parameter without ``.grad``)."""
    if not params:
        return torch.zeros(0)
    device = params[0].device
    parts = [
        p.grad.detach().reshape(-1).to(device=device, dtype=torch.float32)
        if p.grad is not None
        else torch.zeros(p.numel(), device=device)
        for p in params
    ]
    return torch.cat(parts)


def write_grads(params: list[torch.nn.Parameter], flat: torch.Tensor) -> None:
    """Copy consecutive slices of ``flat`` into each parameter's ``.grad`` (created if missing)."""
    offset = 0
    for p in params:
        piece = flat[offset : offset + p.numel()].view_as(p)
        offset += p.numel()
        if p.grad is None:
            p.grad = piece.to(dtype=p.dtype).clone()
        else:
            p.grad.copy_(piece)


class FlatMemoryScheme(Algorithm):
    """A scheme that compresses the flat gradient and keeps one flat error-feedback residual
    (top-k, random-k, EF-sign): the memory's life cycle, which is the same for all of them.

    The memory is sized by :meth:`_prepare` (the subclass's: it also sizes what it sends) and
    lives on the parameters' device; a checkpoint carries a CPU copy of it, and a loaded memory
    of another length is refused (another model or configuration wrote it).
    """

    def __init__(self, cfg: Any, dist_ctx: Any) -> None:
        super().__init__(cfg, dist_ctx)
        self.d = 0
        self.memory: torch.Tensor | None = None
        self._device = torch.device("cpu")  # the parameters' (where the memory lives)

    def _prepare(self, params: list[torch.nn.Parameter]) -> None:
        raise NotImplementedError

    def setup(self, model: torch.nn.Module) -> None:
        super().setup(model)
        params = grad_params(model)
        if params:
            self._device = params[0].device
        self._prepare(params)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "memory": cpu_copy(self.memory)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        memory = state["memory"]
        self.memory = None if memory is None else restore(memory, (self.d,), "memory", self._device)
