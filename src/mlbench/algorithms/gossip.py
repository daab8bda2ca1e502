"""Decentralised gossip SGD (D-PSGD, Lian et al., NeurIPS 2017).

No parameter server and no global average: rank 0 is an ordinary node. Every rank keeps its own
model ``x_i``; each step it

1. computes a gradient on its own data and takes its *local* optimizer step (``reduce_gradients``
   does nothing — gradients are never exchanged), then
2. in ``after_step``, replaces its parameters and floating-point buffers by the weighted average of
   its neighbours' and its own: ``x_i ← Σ_j W_ij x_j``, with ``W`` the mixing matrix of
   ``algorithm.topology`` (:mod:`mlbench.algorithms.topology`).

So ``x_{t+1} = W (x_t - γ g_t)`` — the "adapt-then-combine" form of D-PSGD, as analysed by
Koloskova et al. (ICML 2020); the paper's listing instead mixes ``x_t`` while the gradient is
computed, which has the same convergence guarantees. Optimizer state (e.g. momentum) stays local
and is not mixed; integer buffers (e.g. BatchNorm's ``num_batches_tracked``) are left alone. The
ranks' models differ between steps: since ``W`` is doubly stochastic their mean moves by the
average of the local updates, and each mixing multiplies their spread around the mean by at most
``1 - spectral_gap``.

Collectives (default process group):

* ``setup``: ``broadcast`` of parameters and buffers from rank 0 (the base class), so every rank
  starts from the same ``x_0``, as D-PSGD assumes.
* ``after_step``: parameters and floating buffers are flattened into one contiguous buffer (one
  per dtype, normally exactly one); one ``isend`` of it to each neighbour and one ``irecv`` from
  each neighbour, posted together with ``batch_isend_irecv`` (:meth:`Algorithm.exchange`) and
  waited for synchronously before mixing. Only the neighbours of the graph are contacted.

Bytes: ``bytes_sent`` grows by ``degree x`` (flattened buffer bytes) per step, ``collectives`` by
``degree`` (one count per message). With one rank — or any rank without neighbours — nothing is
sent and the step is plain local SGD.

Checkpoint: only the byte/collective counters. Nothing is kept between steps (the send and
receive buffers are made per step; ``W`` and the peers follow from the configuration), but the
ranks' models *differ*, so a checkpoint must hold every rank's own parameters and optimizer
state — the loop saves them per rank.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch

from mlbench.algorithms import topology as topo
from mlbench.algorithms.allreduce import AllReduce
from mlbench.algorithms.base import Algorithm
from mlbench.config import SchemeConfig, param

if TYPE_CHECKING:
    from mlbench.dist import DistContext


@dataclass
class GossipConfig(SchemeConfig):
    topology: Literal["ring", "torus", "exponential", "complete", "custom"] = param(
        "ring", help="communication graph"
    )
    mixing_matrix: str | None = param(
        None, help="JSON list of rows (or a .json file) when topology = custom"
    )


class Gossip(Algorithm):
    name = "gossip"
    config_cls = GossipConfig
    cfg: GossipConfig

    def __init__(self, cfg: GossipConfig, dist_ctx: DistContext) -> None:
        super().__init__(cfg, dist_ctx)
        self.W = topo.mixing_matrix(cfg.topology, dist_ctx.world_size, cfg.mixing_matrix)
        self.self_weight = float(self.W[dist_ctx.rank, dist_ctx.rank])
        self.peers = topo.neighbours(self.W, dist_ctx.rank)
        self.gap = topo.spectral_gap(self.W)

    @classmethod
    def check_config(cls, cfg: GossipConfig, world_size: int) -> None:
        topo.check(cfg.topology, world_size, cfg.mixing_matrix)

    # ------------------------------------------------------------------ hooks
    def setup(self, model: torch.nn.Module) -> None:
        """Broadcast rank 0's parameters and buffers: all ranks start from the same model."""
        super().setup(model)

    def after_step(self, model: torch.nn.Module) -> None:
        if not self.peers:
            return
        with torch.no_grad():
            for group in self._groups(AllReduce.state_tensors(model)):
                self._mix(group)

    @staticmethod
    def _groups(tensors: list[torch.Tensor]) -> list[list[torch.Tensor]]:
        """Tensors grouped by (dtype, device), in first-seen order: one flat buffer per group."""
        groups: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
        for t in tensors:
            groups.setdefault((t.dtype, t.device), []).append(t)
        return list(groups.values())

    def _mix(self, tensors: list[torch.Tensor]) -> None:
        """``x ← W_ii x + Σ_j W_ij x_j`` on the flattened ``tensors``, one message per peer."""
        flat = torch.cat([t.reshape(-1) for t in tensors])
        recvs = {peer: torch.empty_like(flat) for peer in self.peers}
        self.exchange(dict.fromkeys(self.peers, flat), recvs)
        mixed = flat.mul_(self.self_weight)
        for peer, weight in self.peers.items():
            mixed.add_(recvs[peer], alpha=weight)
        offset = 0
        for t in tensors:
            t.copy_(mixed[offset : offset + t.numel()].view_as(t))
            offset += t.numel()

    def stats(self) -> dict[str, Any]:
        return {
            **super().stats(),
            "topology": self.cfg.topology,
            "degree": len(self.peers),
            "spectral_gap": self.gap,
        }
