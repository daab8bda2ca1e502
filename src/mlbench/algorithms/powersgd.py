"""PowerSGD: rank-r gradient compression with error feedback (Vogels et al. 2019, "PowerSGD:
Practical Low-Rank Gradient Compression for Distributed Optimization"), implemented natively.

The result is, step for step, the same as ``DistributedDataParallel`` with one gradient bucket and
PyTorch's ``powerSGD_hook`` (``PowerSGDState(matrix_approximation_rank=rank,
start_powerSGD_iter=start_iter, min_compression_rate=..., use_error_feedback=True,
warm_start=..., random_seed=seed)``); ``tests/dist/test_powersgd.py`` checks this against the hook
itself. Per step, on the gradients of all parameters with ``requires_grad`` (a ``.grad`` that is
``None`` counts as zeros and is allocated, so every replica takes the same step):

* Steps ``0 … start_iter−1``: plain averaging — the gradients flattened into one fp32 tensor,
  ``all_reduce(SUM)``, ÷k (the hook's ``start_powerSGD_iter`` semantics).
* From step ``start_iter`` on, each gradient is viewed as a matrix ``M`` of shape
  ``(shape[0], numel/shape[0])`` (a conv kernel ``(out, in, kh, kw)`` → ``(out, in·kh·kw)``) with
  ``r = min(n, m, rank)``. It is compressed when that saves at least ``min_compression_rate``:
  ``(n + m)·r·min_compression_rate < n·m``. 0-d and 1-d tensors (biases, norms) are never
  compressed. Then::

      M ← M + e                        (error feedback: this rank's residual of the last step)
      Q ← orth(Q_prev)  or  orth(randn) (warm start, else / first time: fresh Gaussian Q)
      P ← all_reduce(M Q);  P ← orth(P)
      Q ← all_reduce(Mᵀ P) / k
      e ← M − P Qᵀ;  grad ← P Qᵀ

  and the tensors not compressed are averaged exactly. ``orth`` is Gram–Schmidt for r ≤ 2 and
  Householder QR above, as in PyTorch (a column of zeros stays zero instead of becoming NaN).
  A step whose all-reduced P or Q is not finite (an fp16 overflow, which makes the loop skip the
  optimizer step) keeps the previous residual and draws a fresh Q next time, so one overflow does
  not poison every later step as it would in the hook.

Order and seeding, as DDP + hook do it: DDP lays a bucket out in the order gradients became ready
in the first backward; we record that order with post-accumulate-grad hooks during the first
backward after :meth:`setup` (rank 0's order is broadcast once, as DDP syncs its bucket layout),
falling back to reverse registration order for parameters that produced no gradient. Matrices are
then grouped by matrix shape (shapes in first-appearance order), which is the order the hook fills
P and Q. Each Q initialisation (the first compressed step with ``warm_start``, every compressed
step without) draws ``s = numpy.random.RandomState(seed).randint(1_000_000_000)`` (one shared
stream per run) and fills the Qs in that order from a CPU ``torch.Generator`` seeded with ``s`` —
the numbers the hook gets from ``torch.manual_seed(s)``, without touching the global RNG. ``seed``
is a constructor argument, default 0: ``PowerSGDState``'s default ``random_seed`` and what the
``ddp`` scheme's powersgd hook uses, so both schemes draw the same Qs. Identical on all ranks.

Two internal differences from the hook that do not change the averaged result: the residual ``e``
is kept only for compressed matrices (the hook also keeps ``local − mean`` for the uncompressed
tensors, whose mean over ranks is zero; PowerSGD's output is linear in the ranks' inputs and only
depends on the mean of the residuals), and ``start_iter = 1`` is allowed (the hook needs ≥ 2
because DDP rebuilds its buckets after the first step). We match DDP *with one bucket*: the hook
draws one seed per bucket, so multi-bucket DDP draws different Qs.

Collectives (default process group; all inside ``reduce_gradients`` and finished before it
returns, through the counted helpers, so ``bytes_sent`` counts them):

* ``setup``: broadcast of rank 0's parameters and buffers (the base class).
* first ``reduce_gradients`` after ``setup``: one broadcast of rank 0's gradient order (int64,
  one per parameter; 8·#parameters bytes on rank 0).
* steps before ``start_iter``: one ``all_reduce`` of all gradients, flattened (fp32).
* compressed steps: an ``all_reduce`` of the flattened uncompressed tensors, started
  asynchronously and overlapping the P/Q computation, then a synchronous ``all_reduce`` of all
  P matrices (one flat tensor, Σ n·r floats) and one of all Q matrices (Σ m·r floats): at most
  three collectives and ``4·(Σ n·r + Σ m·r + uncompressed numel)`` bytes per step.

Everything is computed in fp32 on the parameters' device. With world size 1 nothing is
communicated, compressed or remembered: gradients are left untouched (plain local training).

Checkpoint (:meth:`state_dict`, per rank): the step counter (where the run stands relative to
``start_iter``), ``compressed_steps`` and the two byte sums behind ``compression_ratio``, the
Q-seed stream (the ``RandomState``, as plain values), the agreed gradient order (as indices into
the parameters), and — once compression has started — this rank's residual ``e``, the last Q
(warm start) and whether that Q may be reused. The order and the buffers are made lazily at the
first steps; a loaded checkpoint builds them at load time from the parameters ``setup`` found,
so a resumed run neither records nor broadcasts the order again (its byte counts stay those of
the uninterrupted run) and its first compressed step warm-starts from the saved Q.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mlbench.algorithms.base import Algorithm
from mlbench.algorithms.snapshot import cpu_copy, load_numpy_rng_state, numpy_rng_state, restore
from mlbench.config import SchemeConfig, param
from mlbench.errors import ConfigError

if TYPE_CHECKING:
    from torch.utils.hooks import RemovableHandle

    from mlbench.dist import DistContext


@dataclass
class PowerSGDConfig(SchemeConfig):
    """PowerSGD's options (also DDP's when its hook is PowerSGD)."""

    matrix_rank: int = param(
        2,
        minimum=1,
        help="rank r of the low-rank gradient approximation (not a process rank)",
    )
    warm_start: bool = param(True, help="reuse Q from the previous step")
    min_compression_rate: float = param(
        2.0, minimum=1.0, help="compress a matrix only if it saves at least this factor"
    )
    start_iter: int = param(
        2, minimum=1, help="plain all-reduce before this step (torch's start_powerSGD_iter)"
    )


# ---------------------------------------------------------------------- pure helpers
def matrix_shape(shape: torch.Size | tuple[int, ...]) -> tuple[int, int] | None:
    """The ``(n, m)`` a gradient of this shape is viewed as, or None (0-d and 1-d tensors)."""
    if len(shape) < 2:
        return None
    n = int(shape[0])
    numel = 1
    for s in shape:
        numel *= int(s)
    return n, (numel // n if n else 0)


def compression_rank(
    shape: torch.Size | tuple[int, ...], rank: int, min_compression_rate: float
) -> int:
    """The rank ``r = min(n, m, rank)`` a gradient of this shape is compressed to; 0: not at all.

    Compressed iff ``(n + m)·r·min_compression_rate < n·m`` (PyTorch's ``_should_compress``).
    """
    nm = matrix_shape(shape)
    if nm is None:
        return 0
    n, m = nm
    r = min(n, m, rank)
    return r if r > 0 and (n + m) * r * min_compression_rate < n * m else 0


def compressed_order(
    shapes: list[tuple[int, ...]], rank: int, min_compression_rate: float
) -> tuple[list[int], list[int]]:
    """Split gradient positions into (compressed, uncompressed), each in the hook's order.

    Compressed matrices are grouped by matrix shape ``(n, m)`` in order of first appearance, then
    by position (the order the hook lays out P and Q and fills Q from its generator); the
    uncompressed tensors keep their positions' order.
    """
    groups: dict[tuple[int, int], list[int]] = {}
    uncompressed: list[int] = []
    for i, shape in enumerate(shapes):
        nm = matrix_shape(shape)
        if nm is not None and compression_rank(shape, rank, min_compression_rate):
            groups.setdefault(nm, []).append(i)
        else:
            uncompressed.append(i)
    return [i for members in groups.values() for i in members], uncompressed


def payload_numel(shapes: list[tuple[int, ...]], rank: int, min_compression_rate: float) -> int:
    """Floats one rank hands to collectives in a compressed step: Σ n·r + Σ m·r + uncompressed."""
    total = 0
    for shape in shapes:
        r = compression_rank(shape, rank, min_compression_rate)
        nm = matrix_shape(shape)
        if r and nm is not None:
            total += (nm[0] + nm[1]) * r
        else:
            total += math.prod(shape)
    return total


def orthogonalize(matrix: torch.Tensor) -> None:
    """Make the columns of a 2-d ``matrix`` (rows ≥ columns) orthonormal, in place.

    Gram–Schmidt for at most two columns (or half precision), reduced QR otherwise — PyTorch's
    choice in the hook. A column that is (or becomes) all zeros stays zero rather than NaN.
    """
    cols = matrix.shape[1]
    if cols <= 2 or matrix.dtype in (torch.float16, torch.bfloat16):
        tiny = torch.finfo(matrix.dtype).tiny
        for i in range(cols):
            col = matrix[:, i : i + 1]
            col.div_(torch.linalg.vector_norm(col).clamp_min(tiny))
            if i + 1 < cols:
                rest = matrix[:, i + 1 :]
                rest.sub_((col * rest).sum(dim=0, keepdim=True) * col)
    else:
        q, _ = torch.linalg.qr(matrix)
        matrix.copy_(q)


@dataclass
class _Matrix:
    """One compressed gradient: views into the step buffers."""

    pos: int  # position in the gradient order
    mat: torch.Tensor  # (n, m): local M (+ residual), then the decompressed average
    err: torch.Tensor  # (n, m): residual e
    p: torch.Tensor  # (n, r), view into the flat P buffer
    q: torch.Tensor  # (m, r), view into the flat Q buffer


class _Layout:
    """Buffers and views for one fixed list of parameters (in gradient order)."""

    def __init__(self, params: list[torch.nn.Parameter], rank: int, min_rate: float) -> None:
        self.params = params
        device = params[0].device if params else torch.device("cpu")
        shapes = [tuple(p.shape) for p in params]
        compressed, self.uncompressed = compressed_order(shapes, rank, min_rate)
        dims = []
        for i in compressed:
            nm = matrix_shape(shapes[i])
            assert nm is not None
            dims.append((i, nm[0], nm[1], compression_rank(shapes[i], rank, min_rate)))

        def zeros(numel: int) -> torch.Tensor:
            return torch.zeros(numel, device=device, dtype=torch.float32)

        self.mats = zeros(sum(n * m for _, n, m, _ in dims))
        self.error = zeros(self.mats.numel())
        self.p = zeros(sum(n * r for _, n, _, r in dims))
        self.q = zeros(sum(m * r for _, _, m, r in dims))
        self.unc = zeros(sum(params[i].numel() for i in self.uncompressed))
        self.matrices: list[_Matrix] = []
        o_mat = o_p = o_q = 0
        for i, n, m, r in dims:
            self.matrices.append(
                _Matrix(
                    pos=i,
                    mat=self.mats[o_mat : o_mat + n * m].view(n, m),
                    err=self.error[o_mat : o_mat + n * m].view(n, m),
                    p=self.p[o_p : o_p + n * r].view(n, r),
                    q=self.q[o_q : o_q + m * r].view(m, r),
                )
            )
            o_mat, o_p, o_q = o_mat + n * m, o_p + n * r, o_q + m * r
        self.q_ready = False  # Q holds last step's (averaged) Q — warm start possible
        self.dense_bytes = 4 * sum(p.numel() for p in params)
        self.payload_bytes = 4 * (self.p.numel() + self.q.numel() + self.unc.numel())


def _grad(p: torch.nn.Parameter) -> torch.Tensor:
    return p.grad if p.grad is not None else torch.zeros_like(p)


def _write_grad(p: torch.nn.Parameter, value: torch.Tensor) -> None:
    value = value.view(p.shape)
    if p.grad is None:
        p.grad = value.to(dtype=p.dtype).clone()
    else:
        p.grad.copy_(value)


# ---------------------------------------------------------------------- the scheme
class PowerSGD(Algorithm):
    name = "powersgd"
    config_cls = PowerSGDConfig
    cfg: PowerSGDConfig

    def __init__(self, cfg: PowerSGDConfig, dist_ctx: DistContext, *, seed: int = 0) -> None:
        super().__init__(cfg, dist_ctx)
        self.seed = seed
        self._seeds = np.random.RandomState(seed)  # one Q seed per Q initialisation, as torch
        self.step = 0  # reduce_gradients calls so far (with more than one rank)
        self.compressed_steps = 0
        self._compressed_bytes = 0  # bytes sent during compressed steps
        self._compressed_dense = 0  # what dense all-reduces would have sent in those steps
        self._hooks: list[RemovableHandle] = []
        self._ready: dict[int, None] = {}  # parameter indices in gradient-ready order
        self._params: list[torch.nn.Parameter] | None = None  # in registration order
        self._order: list[torch.nn.Parameter] | None = None  # in gradient (bucket) order
        self._layout: _Layout | None = None

    @classmethod
    def check_config(cls, cfg: PowerSGDConfig, world_size: int) -> None:
        rank = cfg.matrix_rank
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ConfigError(
                f"algorithm.matrix_rank must be ≥ 1 (the rank r of PowerSGD's low-rank gradient "
                f"approximation), got {rank!r}"
            )
        rate = cfg.min_compression_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate >= 1.0:
            raise ConfigError(
                f"algorithm.min_compression_rate must be ≥ 1 (a matrix is compressed only if that "
                f"shrinks it by at least this factor), got {rate!r}"
            )
        start = cfg.start_iter
        if isinstance(start, bool) or not isinstance(start, int) or start < 1:
            raise ConfigError(
                f"algorithm.start_iter must be an integer ≥ 1 (steps of plain all-reduce before "
                f"compression starts), got {start!r}"
            )

    # ------------------------------------------------------------------ lifecycle
    @staticmethod
    def _trainable(model: torch.nn.Module) -> list[torch.nn.Parameter]:
        return [p for p in model.parameters() if p.requires_grad]

    def setup(self, model: torch.nn.Module) -> None:
        super().setup(model)
        for h in self._hooks:
            h.remove()
        self._hooks, self._ready = [], {}
        self._params, self._order, self._layout = self._trainable(model), None, None
        if self.dist.world_size == 1:
            return
        for i, p in enumerate(self._params):
            self._hooks.append(
                p.register_post_accumulate_grad_hook(functools.partial(self._on_ready, i))
            )

    def _on_ready(self, index: int, _param: torch.Tensor) -> None:
        self._ready.setdefault(index, None)

    def _gradient_order(self, params: list[torch.nn.Parameter]) -> list[torch.nn.Parameter]:
        """Parameters in DDP's bucket order; fixed (and agreed on) at the first call."""
        same = self._params is not None and len(self._params) == len(params)
        same = same and all(a is b for a, b in zip(self._params or [], params, strict=False))
        if self._order is not None and same:
            return self._order
        recorded = bool(self._hooks) and same
        for h in self._hooks:
            h.remove()
        self._hooks = []
        ready = list(self._ready) if recorded else []
        seen = set(ready)
        order = ready + [i for i in reversed(range(len(params))) if i not in seen]
        if recorded:  # as DDP syncs its bucket layout: everyone takes rank 0's order
            t = torch.tensor(order, dtype=torch.int64, device=params[0].device)
            self.broadcast(t, src=0)
            order = [int(i) for i in t.tolist()]
        self._params, self._order, self._layout = params, [params[i] for i in order], None
        return self._order

    # ------------------------------------------------------------------ the step
    @torch.no_grad()
    def reduce_gradients(self, model: torch.nn.Module) -> None:
        k = self.dist.world_size
        if k == 1:
            return
        params = self._gradient_order(self._trainable(model))
        if not params:
            return
        step, self.step = self.step, self.step + 1
        if step < self.cfg.start_iter:
            self._average_dense(params)
            return
        if self._layout is None:
            self._layout = _Layout(params, self.cfg.matrix_rank, self.cfg.min_compression_rate)
        before = self.bytes_sent
        self._compress_and_average(self._layout)
        self.compressed_steps += 1
        self._compressed_bytes += self.bytes_sent - before
        self._compressed_dense += self._layout.dense_bytes

    def _average_dense(self, params: list[torch.nn.Parameter]) -> None:
        flat = torch.cat([_grad(p).reshape(-1).float() for p in params])
        self.all_reduce(flat)
        flat.div_(self.dist.world_size)
        offset = 0
        for p in params:
            _write_grad(p, flat[offset : offset + p.numel()])
            offset += p.numel()

    def _compress_and_average(self, lay: _Layout) -> None:
        k = self.dist.world_size
        params = lay.params
        # uncompressed tensors: one flat all-reduce, overlapping the P/Q work below
        work = None
        if lay.uncompressed:
            torch.cat([_grad(params[i]).reshape(-1).float() for i in lay.uncompressed], out=lay.unc)
            work = self.all_reduce(lay.unc, async_op=True)
        if lay.matrices:
            for mx in lay.matrices:
                mx.mat.copy_(_grad(params[mx.pos]).reshape(mx.mat.shape))
            lay.mats.add_(lay.error)  # error feedback
            if self.cfg.warm_start and lay.q_ready:
                for mx in lay.matrices:
                    orthogonalize(mx.q)
            else:
                gen = torch.Generator().manual_seed(int(self._seeds.randint(1_000_000_000)))
                for mx in lay.matrices:
                    mx.q.copy_(torch.randn(mx.q.shape, generator=gen, dtype=torch.float32))
                    orthogonalize(mx.q)
            for mx in lay.matrices:
                torch.matmul(mx.mat, mx.q, out=mx.p)
            self.all_reduce(lay.p)  # sum; orthogonalisation makes the scale irrelevant
            for mx in lay.matrices:
                orthogonalize(mx.p)
                torch.matmul(mx.mat.t(), mx.p, out=mx.q)
            self.all_reduce(lay.q)
            lay.q.div_(k)
            # P and Q are the same on every rank, so this verdict needs no extra collective
            finite = bool(torch.isfinite(lay.p).all() and torch.isfinite(lay.q).all())
            if finite:
                lay.error.copy_(lay.mats)
            for mx in lay.matrices:
                torch.matmul(mx.p, mx.q.t(), out=mx.mat)
            if finite:
                lay.error.sub_(lay.mats)  # e = (M + e_prev) − P Qᵀ
            lay.q_ready = finite  # after an overflow: keep e_prev, draw a fresh Q next time
            for mx in lay.matrices:
                _write_grad(params[mx.pos], mx.mat)
        if work is not None:
            work.wait()
            lay.unc.div_(k)
            offset = 0
            for i in lay.uncompressed:
                p = params[i]
                _write_grad(p, lay.unc[offset : offset + p.numel()])
                offset += p.numel()

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        lay = self._layout
        index = {id(p): i for i, p in enumerate(self._params or [])}
        return {
            **super().state_dict(),
            "step": self.step,
            "compressed_steps": self.compressed_steps,
            "compressed_bytes": self._compressed_bytes,
            "compressed_dense": self._compressed_dense,
            "seeds": numpy_rng_state(self._seeds),
            "order": None if self._order is None else [index[id(p)] for p in self._order],
            "error": None if lay is None else cpu_copy(lay.error),
            "q": None if lay is None else cpu_copy(lay.q),
            "q_ready": False if lay is None else lay.q_ready,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; after :meth:`setup`, which found the parameters."""
        super().load_state_dict(state)
        self.step = int(state["step"])
        self.compressed_steps = int(state["compressed_steps"])
        self._compressed_bytes = int(state["compressed_bytes"])
        self._compressed_dense = int(state["compressed_dense"])
        load_numpy_rng_state(self._seeds, state["seeds"])
        order = state["order"]
        if order is None:
            return  # saved before the first step: the order is recorded as usual
        params = self._params or []
        if sorted(order) != list(range(len(params))):
            raise ValueError(
                f"checkpointed PowerSGD gradient order covers {len(order)} parameters, this "
                f"model has {len(params)} (a checkpoint of another model)"
            )
        for h in self._hooks:  # the order is known: nothing to record, nothing to broadcast
            h.remove()
        self._hooks, self._ready = [], {}
        self._order, self._layout = [params[i] for i in order], None
        if state["error"] is None:
            return
        lay = _Layout(self._order, self.cfg.matrix_rank, self.cfg.min_compression_rate)
        device = lay.error.device
        lay.error.copy_(restore(state["error"], tuple(lay.error.shape), "residual", device))
        lay.q.copy_(restore(state["q"], tuple(lay.q.shape), "Q", device))
        lay.q_ready = bool(state["q_ready"])
        self._layout = lay

    # ------------------------------------------------------------------ reporting
    @property
    def payload_bytes_per_compressed_step(self) -> int:
        """Bytes one rank hands to collectives in a compressed step (P, Q and uncompressed)."""
        if self.dist.world_size == 1:
            return 0
        if self._layout is not None:
            return self._layout.payload_bytes
        if self._params is None:
            return 0
        shapes = [tuple(p.shape) for p in self._params]
        return 4 * payload_numel(shapes, self.cfg.matrix_rank, self.cfg.min_compression_rate)

    def stats(self) -> dict[str, Any]:
        return {
            **super().stats(),
            "rank": self.cfg.matrix_rank,
            "start_iter": self.cfg.start_iter,
            "compressed_steps": self.compressed_steps,
            "payload_bytes_per_compressed_step": self.payload_bytes_per_compressed_step,
            # dense fp32 bytes ÷ bytes sent, over compressed steps; 1.0 before any (or one rank)
            "compression_ratio": (
                self._compressed_dense / self._compressed_bytes if self._compressed_bytes else 1.0
            ),
        }
