"""The algorithm contract (DESIGN §4).

Lifecycle, as the training loop drives it::

    model = algo.wrap(model)                       # e.g. DDP wraps; most schemes return it as is
    optimizer = algo.build_optimizer(model, task_optimizer)   # e.g. centralized Adam replaces it
    algo.setup(model)                              # bring all ranks to the same start
    every step:
        data → forward → backward → reduce_gradients(model) → optimizer.step() → after_step(model)

``reduce_gradients`` and ``after_step`` are timed as the ``communication`` phase. Schemes whose
communication overlaps backward (hooks, DDP) report, via :meth:`exposed_in_backward`, how much of
the last backward was spent *waiting* for communication; the loop moves that time from
``backward`` to ``communication`` so that phase always means *exposed* communication.

With world size 1 every scheme must degenerate to plain local training without caller branches.
Every collective goes through the counting helpers below (:meth:`all_reduce`,
:meth:`all_gather`, ...), so ``bytes_sent`` is the payload this rank handed to collectives:
all_reduce/broadcast-from-self → the tensor's bytes; all_gather → this rank's contribution;
send → the bytes sent. (Wire bytes depend on the backend's algorithm; docs/timing.md.)
"""

from __future__ import annotations

import contextlib
from abc import ABC
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.distributed as dist

from mlbench.config import SchemeConfig

if TYPE_CHECKING:
    from mlbench.dist import DistContext


class Algorithm(ABC):
    name: ClassVar[str]
    #: this scheme's ``algorithm`` section: ``name`` plus its own typed options (a dataclass
    #: subclassing :class:`SchemeConfig`). Its fields are the scheme's ``algorithm.*`` keys:
    #: type-checked on load, listed by ``mlbench tasks --show`` and ``/api/algorithms``, and
    #: compared with their defaults for ``official_differences``.
    config_cls: ClassVar[type[SchemeConfig]] = SchemeConfig
    #: True when communication overlaps backward; ``exposed_in_backward`` reports the wait. Read
    #: once after ``setup`` (fixed for the run): the loop asks for the wait only when it is True.
    overlaps: ClassVar[bool] = False

    def __init__(self, cfg: Any, dist_ctx: DistContext) -> None:
        self.cfg = cfg
        self.dist = dist_ctx
        self.bytes_sent = 0
        self.collectives = 0
        self.dense_bytes_per_step = 0  # what a dense fp32 gradient all-reduce would send

    # ------------------------------------------------------------------ configuration
    @classmethod
    def check_config(cls, cfg: Any, world_size: int) -> None:
        """Reject bad options before any process starts (raise ConfigError)."""
        return None

    # ------------------------------------------------------------------ lifecycle hooks
    def no_sync(self) -> contextlib.AbstractContextManager[None]:
        """Hold communication for a micro-batch that is not the step's last (``train.accumulate``).

        The loop calls ``reduce_gradients`` once per optimizer step, so a scheme that reduces
        there needs nothing; a scheme that communicates *during* backward (hooks, DDP) returns a
        context that keeps its backward silent.
        """
        return contextlib.nullcontext()

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """Return the module the loop trains (the same one, unless the scheme wraps it)."""
        return model

    def build_optimizer(
        self, model: torch.nn.Module, task_optimizer: torch.optim.Optimizer
    ) -> torch.optim.Optimizer:
        """The optimizer to use; by default the task's."""
        return task_optimizer

    def lr_scale(self, cfg: Any) -> float:
        """Factor applied to every lr the task's schedule sets (1.0: the task's own lrs).

        A scheme that brings its own optimizer (centralized Adam) keeps the task's schedule shape
        — warm-up, scaling with k, plateau — rescaled to its own base lr.
        """
        return 1.0

    def setup(self, model: torch.nn.Module) -> None:
        """Bring all ranks to the same starting point: broadcast rank 0's parameters and buffers."""
        self.dense_bytes_per_step = sum(
            p.numel() * 4 for p in model.parameters() if p.requires_grad
        )
        for t in list(model.parameters()) + list(model.buffers()):
            self.broadcast(t.data, src=0)

    def zero_grad(self, optimizer: torch.optim.Optimizer) -> None:
        """Before backward: clear the gradients. By default they are dropped (``None``) and
        autograd allocates fresh ones; a scheme whose gradients live in its own buffers (bucket
        views) zeroes those instead."""
        optimizer.zero_grad(set_to_none=True)

    def reduce_gradients(self, model: torch.nn.Module) -> None:
        """After backward, before the optimizer step."""
        return None

    def after_step(self, model: torch.nn.Module) -> None:
        """After the optimizer step."""
        return None

    def exposed_in_backward(self) -> float:
        """Seconds of the last backward spent waiting on communication. Called only when
        :attr:`overlaps` is True."""
        return 0.0

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """This rank's scheme state that an exact resume needs (a checkpoint carries it).

        The base holds only the measurement counters. A scheme with state of its own
        (error-feedback memories, PowerSGD's Q, local-SGD counters, its random generators)
        extends the dict; tensors are fine (the checkpoint is ``torch.save``-d per rank).
        """
        return {"bytes_sent": self.bytes_sent, "collectives": self.collectives}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output. Called after :meth:`setup` (and before the first
        step of the resumed attempt); state a scheme creates lazily at its first step is kept
        until then."""
        self.bytes_sent = int(state["bytes_sent"])
        self.collectives = int(state["collectives"])

    def stats(self) -> dict[str, Any]:
        # ``overlaps_backward``: communication time in the result is the exposed part only
        return {
            "bytes_sent": self.bytes_sent,
            "collectives": self.collectives,
            "overlaps_backward": bool(self.overlaps),
        }

    # ------------------------------------------------------------------ counted collectives
    def _count(self, nbytes: int) -> None:
        self.bytes_sent += nbytes
        self.collectives += 1

    @staticmethod
    def nbytes(t: torch.Tensor) -> int:
        return t.numel() * t.element_size()

    def all_reduce(self, t: torch.Tensor, *, async_op: bool = False) -> Any:
        """Sum in place over ranks; nothing is sent with one rank."""
        if self.dist.world_size == 1:
            return None
        self._count(self.nbytes(t))
        return dist.all_reduce(t, op=dist.ReduceOp.SUM, async_op=async_op)

    def all_gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's ``t`` (same shape on all ranks), in rank order."""
        if self.dist.world_size == 1:
            return [t]
        out = [torch.empty_like(t) for _ in range(self.dist.world_size)]
        self._count(self.nbytes(t))
        dist.all_gather(out, t)
        return out

    def broadcast(self, t: torch.Tensor, src: int) -> None:
        if self.dist.world_size == 1:
            return
        if self.dist.rank == src:
            self._count(self.nbytes(t))
        dist.broadcast(t, src=src)

    def exchange(self, sends: dict[int, torch.Tensor], recvs: dict[int, torch.Tensor]) -> None:
        """Point-to-point: send ``sends[peer]`` to each peer and fill ``recvs[peer]`` from each."""
        ops = [dist.P2POp(dist.isend, t, peer) for peer, t in sends.items()]
        ops += [dist.P2POp(dist.irecv, t, peer) for peer, t in recvs.items()]
        if not ops:
            return
        for t in sends.values():
            self._count(self.nbytes(t))
        for req in dist.batch_isend_irecv(ops):
            req.wait()


def scheme_options(cls: type[Algorithm]) -> list[str]:
    """The option keys of a scheme's section (without ``name``), in declaration order."""
    import dataclasses

    return [f.name for f in dataclasses.fields(cls.config_cls) if f.name != "name"]
