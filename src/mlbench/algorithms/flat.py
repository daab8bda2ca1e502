"""Gradients as one flat vector: the shape compressing schemes (top-k, sign, ...) work on."""

from __future__ import annotations

import torch


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
