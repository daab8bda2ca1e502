"""Sparsified SGD: top-k and random-k with error feedback (Stich et al. 2018, "Sparsified SGD
with memory"; Alistarh et al. 2018).

Works for any model: every step the gradients of all parameters with ``requires_grad`` are
flattened, in ``model.parameters()`` order, into one fp32 vector ``g`` of length ``d`` (a
parameter whose ``.grad`` is ``None`` contributes zeros). With ``error_feedback``::

    p = g + memory
    S = top-k |p| (TopK) or k uniformly random distinct indices (RandomK)
    memory = p - sparse_S(p)

and without it ``p = g`` and the memory stays zero. ``k = max(1, ceil(fraction·d))`` (``fraction``
in (0, 1]; ``fraction·d`` is rounded to 9 decimals before the ceiling so that float noise such as
``0.1·30 = 3.0000000000000004`` does not add an entry). Random-k sends the selected values as they
are — no ``d/k`` rescaling, the biased operator the error-feedback analysis uses.

Collectives (default process group, synchronous, in ``reduce_gradients``; ``setup`` broadcasts
parameters and buffers from rank 0 like every scheme):

* ``all_gather`` of the ``k`` selected values (float32) and
* ``all_gather`` of their ``k`` indices into the flattened gradient (int32 — int64 only if
  ``d ≥ 2³¹``),

so ``bytes_sent`` grows by ``k·(4 + 4)`` per step (2 collectives). Every rank then scatter-adds
all ranks' (index, value) pairs into a dense vector, divides by the world size and copies the
slices back into the parameters' ``.grad`` (allocating ``.grad`` where it was ``None``, so all
replicas take the same step); the task's optimizer then applies lr, momentum and weight decay.

Random-k draws its indices from a per-rank ``torch.Generator`` (CPU) seeded with the first 63 bits
of ``sha256("mlbench-randomk:{seed}:{rank}")``; ``seed`` is the run seed — the constructor's
``seed`` argument, else ``torch.initial_seed()`` at construction, which is ``cfg.seed`` because the
loop seeds torch before it builds the algorithm. Ranks therefore pick different indices, and a run
is reproducible.

World size 1: nothing is communicated and the gradient is left untouched (no sparsification,
no memory): plain local training, as the contract asks. Compression only exists to save
communication, and there is none.

Checkpoint (:meth:`state_dict`, per rank): the byte/collective counters, this rank's
error-feedback ``memory`` (a CPU copy; None before the first step or without error feedback)
and, for random-k, the state of its index generator — so a resumed run picks the same indices
the uninterrupted one would have. The memory is created lazily at the first step; a loaded one
is put in place at load time (its length is checked against this model's gradient length, which
``setup`` already knows). ``last_indices`` is for inspection only and is not carried.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from mlbench.algorithms.flat import FlatMemoryScheme, flatten_grads, grad_params, write_grads
from mlbench.config import SchemeConfig, param
from mlbench.errors import ConfigError

if TYPE_CHECKING:
    from mlbench.dist import DistContext


@dataclass
class SparseConfig(SchemeConfig):
    fraction: float = param(0.01, help="fraction of gradient entries sent, in (0, 1]")
    error_feedback: bool = param(True, help="keep the residual memory")


def num_selected(fraction: float, d: int) -> int:
    """``k = max(1, ceil(fraction·d))``, at most ``d`` (``fraction·d`` rounded to 9 decimals)."""
    return max(1, min(d, math.ceil(round(fraction * d, 9))))


def check_fraction(cfg: SparseConfig) -> None:
    f = cfg.fraction
    if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 < f <= 1.0:
        raise ConfigError(
            f"algorithm.fraction must be in (0, 1] (the share of gradient entries each rank "
            f"sends per step), got {f!r}"
        )


def derive_seed(tag: str, seed: int, rank: int) -> int:
    """A 63-bit generator seed from (tag, run seed, rank); stable across platforms and runs."""
    digest = hashlib.sha256(f"{tag}:{seed}:{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


# ---------------------------------------------------------------------- schemes
class _Sparsified(FlatMemoryScheme):
    """Shared machinery: flatten, error feedback, gather (values, indices), average, write back."""

    config_cls = SparseConfig
    cfg: SparseConfig

    def __init__(self, cfg: SparseConfig, dist_ctx: DistContext) -> None:
        super().__init__(cfg, dist_ctx)
        self.k = 0
        #: indices this rank selected in the last step (int64), for inspection and tests
        self.last_indices: torch.Tensor | None = None

    @classmethod
    def check_config(cls, cfg: SparseConfig, world_size: int) -> None:
        check_fraction(cfg)

    @property
    def index_dtype(self) -> torch.dtype:
        return torch.int32 if self.d < 2**31 else torch.int64

    @property
    def payload_bytes_per_step(self) -> int:
        """What this rank hands to collectives per step: k values (fp32) + k indices."""
        if self.dist.world_size == 1 or self.d == 0:
            return 0
        index_bytes = torch.empty((), dtype=self.index_dtype).element_size()
        return self.k * (4 + index_bytes)

    def _prepare(self, params: list[torch.nn.Parameter]) -> None:
        d = sum(p.numel() for p in params)
        if d != self.d:
            self.d = d
            self.k = num_selected(self.cfg.fraction, d) if d else 0
            self.memory = None

    def select(self, p: torch.Tensor) -> torch.Tensor:
        """Indices (int64, on ``p``'s device) of the ``self.k`` entries of ``p`` to send."""
        raise NotImplementedError

    @torch.no_grad()
    def reduce_gradients(self, model: torch.nn.Module) -> None:
        if self.dist.world_size == 1:
            return
        params = grad_params(model)
        self._prepare(params)
        if self.d == 0:
            return
        p = flatten_grads(params)
        if self.cfg.error_feedback:
            if self.memory is None:
                self.memory = torch.zeros_like(p)
            p.add_(self.memory)
        idx = self.select(p)
        values = p[idx]
        self.last_indices = idx
        if self.cfg.error_feedback:
            assert self.memory is not None
            self.memory.copy_(p)
            self.memory[idx] = 0.0  # memory = p - sparse(p)

        all_values = self.all_gather(values.contiguous())
        all_indices = self.all_gather(idx.to(self.index_dtype))
        dense = torch.zeros_like(p)
        dense.index_add_(0, torch.cat(all_indices).long(), torch.cat(all_values))
        dense.mul_(1.0 / self.dist.world_size)
        write_grads(params, dense)

    def stats(self) -> dict[str, Any]:
        payload = self.payload_bytes_per_step
        dense = self.d * 4
        return {
            **super().stats(),
            "k": self.k,
            "payload_bytes_per_step": payload,
            # no compression happens with one rank (nothing is sent): ratio 1
            "compression_ratio": dense / payload if payload else 1.0,
        }


class TopK(_Sparsified):
    """Each rank sends its ``k`` largest-magnitude entries of ``g + memory``."""

    name = "topk"

    def select(self, p: torch.Tensor) -> torch.Tensor:
        return torch.topk(p.abs(), self.k, sorted=False).indices


class RandomK(_Sparsified):
    """Each rank sends ``k`` distinct uniformly random entries of ``g + memory``."""

    name = "randomk"

    def __init__(
        self, cfg: SparseConfig, dist_ctx: DistContext, *, seed: int | None = None
    ) -> None:
        super().__init__(cfg, dist_ctx)
        self.seed = torch.initial_seed() if seed is None else seed
        self.generator = torch.Generator().manual_seed(
            derive_seed("mlbench-randomk", self.seed, dist_ctx.rank)
        )

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.generator.set_state(state["generator"])

    def select(self, p: torch.Tensor) -> torch.Tensor:
        idx = torch.randperm(self.d, generator=self.generator)[: self.k]
        return idx.to(p.device)
