"""Sign-based compression: EF-signSGD and signSGD with majority vote.

Gradients of all parameters with ``requires_grad`` are flattened, in ``model.parameters()`` order,
into one fp32 vector ``g`` of length ``d`` (zeros for a parameter whose ``.grad`` is ``None``).
Signs travel as bits, 8 per byte (``uint8``, most significant bit first like ``numpy.packbits``;
the last byte is zero-padded when ``d`` is not a multiple of 8). Bit 1 means ``x ≥ 0`` and bit 0
means ``x < 0``: **sign(0) is taken as +1** everywhere (packing and the compressor alike), so a
sign is always ±1 and fits one bit.

``sign_variant = "ef"`` — EF-signSGD (Karimireddy et al. 2019, "Error feedback fixes SignSGD")::

    p = g + e
    c = (‖p‖₁ / d) · sign(p)
    e = p - c                      (e stays 0 with error_feedback = false)

  Each rank sends ``sign(p)`` as bits plus its scale ``‖p‖₁/d`` as one float32 (the 4 bytes are
  appended to the bits, so one collective), every rank decodes all ranks' ``c`` and writes their
  mean into ``.grad``.

``sign_variant = "majority"`` — signSGD with majority vote (Bernstein et al. 2018, 2019): each rank
  sends ``sign(g)`` as bits; every rank writes ``sign(Σ_r sign_r(g_r))`` into ``.grad`` and the
  task's optimizer applies lr (and its momentum/weight decay, if any). **Ties** (possible only with
  an even world size) **give 0**: that coordinate is not updated this step (``torch.sign`` of the
  vote sum; no bias towards either direction). No memory is kept (``error_feedback`` is ignored).

Collectives (default process group, synchronous, in ``reduce_gradients``; ``setup`` broadcasts
parameters and buffers from rank 0 like every scheme): one ``all_gather`` of a ``uint8`` tensor
of ``ceil(d/8)`` bytes (``ceil(d/8) + 4`` for "ef"), so that is what ``bytes_sent`` grows by per
step. Every rank decodes identically, so replicas stay in step.

World size 1: nothing is communicated and the gradient is left untouched (no sign compression,
no memory) — plain local training, as the contract asks; compression exists only to save
communication, and there is none.

Checkpoint (:meth:`state_dict`, per rank): the byte/collective counters and, for "ef" with
error feedback, this rank's residual ``memory`` (a CPU copy; None before the first step). The
memory is created lazily at the first step; a loaded one is put in place at load time (its
length checked against this model's gradient length, known since ``setup``). Majority vote keeps
no state of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch

from mlbench.algorithms.flat import FlatMemoryScheme, flatten_grads, grad_params, write_grads
from mlbench.config import SchemeConfig, param
from mlbench.errors import ConfigError

if TYPE_CHECKING:
    from mlbench.dist import DistContext


@dataclass
class SignConfig(SchemeConfig):
    sign_variant: Literal["ef", "majority"] = param(
        "ef", help="scaled sign with error feedback, or majority vote"
    )
    error_feedback: bool = param(True, help="ef: keep the residual memory")


_SHIFTS = torch.arange(7, -1, -1, dtype=torch.uint8)  # MSB first


def signs(x: torch.Tensor) -> torch.Tensor:
    """±1 (dtype of ``x``) with sign(0) = +1, the convention of the packed bits."""
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


def pack_signs(x: torch.Tensor) -> torch.Tensor:
    """The signs of a 1-D tensor as ``ceil(len/8)`` uint8 bytes (bit 1: ``x ≥ 0``, MSB first)."""
    d = x.numel()
    bits = (x.reshape(-1) >= 0).to(torch.uint8)
    pad = (-d) % 8
    if pad:
        bits = torch.cat([bits, bits.new_zeros(pad)])
    shifts = _SHIFTS.to(bits.device)
    return (bits.view(-1, 8) << shifts).sum(dim=1, dtype=torch.uint8)


def unpack_signs(packed: torch.Tensor, d: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Inverse of :func:`pack_signs`: ``d`` values ±1 of ``dtype``."""
    shifts = _SHIFTS.to(packed.device)
    bits = (packed.reshape(-1, 1) >> shifts) & 1
    return bits.reshape(-1)[:d].to(dtype) * 2 - 1


class SignSGD(FlatMemoryScheme):
    name = "signsgd"
    config_cls = SignConfig
    cfg: SignConfig

    def __init__(self, cfg: SignConfig, dist_ctx: DistContext) -> None:
        super().__init__(cfg, dist_ctx)
        # self.memory: e, for "ef" with error_feedback

    @classmethod
    def check_config(cls, cfg: SignConfig, world_size: int) -> None:
        if cfg.sign_variant not in ("ef", "majority"):
            raise ConfigError(
                f"algorithm.sign_variant must be 'ef' or 'majority', got {cfg.sign_variant!r}"
            )

    @property
    def ef(self) -> bool:
        return self.cfg.sign_variant == "ef"

    @property
    def payload_bytes_per_step(self) -> int:
        if self.dist.world_size == 1 or self.d == 0:
            return 0
        return (self.d + 7) // 8 + (4 if self.ef else 0)

    def _prepare(self, params: list[torch.nn.Parameter]) -> None:
        d = sum(p.numel() for p in params)
        if d != self.d:
            self.d = d
            self.memory = None

    @torch.no_grad()
    def reduce_gradients(self, model: torch.nn.Module) -> None:
        if self.dist.world_size == 1:
            return
        params = grad_params(model)
        self._prepare(params)
        if self.d == 0:
            return
        g = flatten_grads(params)
        nbytes = (self.d + 7) // 8
        if self.ef:
            p = g
            if self.cfg.error_feedback:
                if self.memory is None:
                    self.memory = torch.zeros_like(g)
                p = g.add_(self.memory)
            scale = p.abs().sum() / self.d
            if self.cfg.error_feedback:
                assert self.memory is not None
                self.memory.copy_(p).sub_(signs(p) * scale)  # e = p - c
            payload = torch.cat([pack_signs(p), scale.reshape(1).view(torch.uint8)])
            gathered = self.all_gather(payload)
            out = torch.zeros_like(g)
            for buf in gathered:
                s = buf[nbytes:].clone().view(torch.float32)
                out.add_(unpack_signs(buf[:nbytes], self.d) * s)
            out.mul_(1.0 / self.dist.world_size)
        else:
            gathered = self.all_gather(pack_signs(g))
            votes = torch.zeros_like(g)
            for buf in gathered:
                votes.add_(unpack_signs(buf, self.d))
            out = torch.sign(votes)  # ties → 0
        write_grads(params, out)

    def stats(self) -> dict[str, Any]:
        payload = self.payload_bytes_per_step
        return {
            **super().stats(),
            "payload_bytes_per_step": payload,
            # no compression happens with one rank (nothing is sent): ratio 1
            "compression_ratio": self.d * 4 / payload if payload else 1.0,
        }
