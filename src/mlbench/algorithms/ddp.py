"""``torch.nn.parallel.DistributedDataParallel`` as a scheme — the baseline practitioners use.

Collectives (all issued by DDP itself): a broadcast of rank 0's parameters and buffers when the
model is wrapped; during backward, one asynchronous ``all_reduce`` per gradient bucket
(``bucket_mb``) launched as soon as the bucket's gradients are ready, overlapping the rest of
backward; a broadcast of buffers (BatchNorm statistics) from rank 0 before every forward. With
``ddp_hook = powersgd`` the buckets go through PyTorch's own PowerSGD communication hook
(``rank``, ``warm_start``, ``min_compression_rate``, ``start_iter``). That hook issues its P and
Q all-reduces from future callbacks, which run on gloo's threads: with two buckets in flight the
ranks can issue them in different orders (a size mismatch or a hang), so each bucket waits for
the previous bucket's chain before it starts — buckets are compressed one at a time, still
overlapping the backward of the layers before them.

DDP always averages gradients; ``algorithm.mode`` is ignored. (For plain SGD from identical
weights — task 2a — averaging the weights after the step is the same update.)

Accounting: a comm hook wraps DDP's default all-reduce (or the PowerSGD hook) to count the bucket
bytes (for PowerSGD: the compressed numel PyTorch reports, ×4 bytes) and to note when the last
bucket was handed to communication. What backward spends after that moment is waiting for
communication to finish (plus copying the averaged gradients back): the loop reports it as
*exposed* communication and keeps it out of ``backward``. The part of communication hidden behind
backward's computation is, by design, not counted as communication time.

Checkpoint (:meth:`state_dict`, per rank): the byte/collective counters; the *reference bucket
layout* (the parameters, as indices, of each bucket DDP formed when it rebuilt its buckets after
its first iteration); and with the PowerSGD hook, PyTorch's ``PowerSGDState``: ``iter``, its
seed ``RandomState``, the per-bucket residuals (``error_dict``) and warm-start memories
(``p_memory_dict``/``q_memory_dict``), keyed by bucket index, and its compression statistics.

Why the layout: DDP starts every process with *one* bucket holding all parameters in
registration order and rebuilds its buckets (``bucket_mb``, gradient-ready order) after the first
iteration — which is why PyTorch's hook needs ``start_powerSGD_iter ≥ 2``: its state never spans
the rebuild. A resumed process is a fresh DDP, so its first step runs in the initial layout while
the loaded state is keyed by the rebuilt buckets (different sizes, orders and seeds). So the hook
keeps the run on the reference layout: a bucket whose parameters differ from the reference is
not reduced directly; when the step's last bucket arrives, the reference buckets are assembled
from the real buffers, reduced one by one (the PowerSGD hook runs on stand-in bucket objects,
:class:`_Bucket`, with their reference indices) and the results copied back. From the rebuilt
second iteration on the real layout equals the reference (DDP rebuilds deterministically from
the gradient-ready order) and buckets go straight through; the layout is then checked no more.
(Were it ever to differ, every step would run emulated: still exact, but without overlap.)
This also makes the plain all-reduce bucket-for-bucket the same as the uninterrupted run's.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as torch_powersgd

from mlbench.algorithms.base import Algorithm
from mlbench.algorithms.powersgd import PowerSGDConfig
from mlbench.algorithms.snapshot import cpu_copy, load_numpy_rng_state, numpy_rng_state, restore
from mlbench.config import param
from mlbench.errors import ConfigError

if TYPE_CHECKING:
    from mlbench.dist import DistContext


@dataclass
class DDPConfig(PowerSGDConfig):
    bucket_mb: float = param(25.0, open=True, minimum=0.001, help="DDP's bucket_cap_mb")
    ddp_hook: Literal["none", "powersgd"] = param(
        "none", help="communication hook (powersgd uses matrix_rank/warm_start/... above)"
    )


def _default_group() -> dist.ProcessGroup:
    return dist.distributed_c10d._get_default_group()


class _Bucket:
    """A stand-in for ``dist.GradBucket`` (which has no Python constructor) over a buffer of our
    own: what the hooks read of a bucket — index, last-ness, buffer, per-parameter views."""

    def __init__(
        self, index: int, count: int, buffer: torch.Tensor, params: list[torch.Tensor]
    ) -> None:
        self._index, self._count, self._buffer, self._params = index, count, buffer, params
        self._grads, offset = [], 0
        for p in params:
            self._grads.append(buffer[offset : offset + p.numel()].view(p.shape))
            offset += p.numel()

    def index(self) -> int:
        return self._index

    def is_last(self) -> bool:
        return self._index == self._count - 1

    def buffer(self) -> torch.Tensor:
        return self._buffer

    def gradients(self) -> list[torch.Tensor]:
        return self._grads

    def parameters(self) -> list[torch.Tensor]:
        return self._params


class DDP(Algorithm):
    name = "ddp"
    config_cls = DDPConfig
    cfg: DDPConfig
    overlaps = True

    def __init__(self, cfg: DDPConfig, dist_ctx: DistContext) -> None:
        super().__init__(cfg, dist_ctx)
        self._last_launch: float | None = None
        self._powersgd: Any = None
        self._inflight: torch.futures.Future[Any] | None = None  # last PowerSGD bucket's
        self._hook_wait = 0.0  # seconds hooks spent waiting for the previous bucket, this step
        self._wrapped: torch.nn.parallel.DistributedDataParallel | None = None
        self._params: list[torch.Tensor] = []  # DDP's (trainable), in registration order
        self._pindex: dict[int, int] = {}  # id(parameter) → its index in _params
        # the bucket layout (parameter indices per bucket) the run's hook state is keyed by
        self._reference: list[tuple[int, ...]] | None = None
        self._settled = False  # DDP's layout is final and equals the reference: no checks
        self._hook_iters = 0  # synchronised backwards this DDP has run (it rebuilds after one)
        self._seen: list[tuple[int, ...]] = []  # this iteration's layout, bucket by bucket
        # real buckets held back this iteration: (buffer, parameter indices, their future)
        self._deferred: list[tuple[torch.Tensor, tuple[int, ...], torch.futures.Future[Any]]] = []

    @classmethod
    def check_config(cls, cfg: DDPConfig, world_size: int) -> None:
        if cfg.ddp_hook == "powersgd" and cfg.matrix_rank < 1:
            raise ConfigError(
                f"algorithm.matrix_rank must be ≥ 1 for PowerSGD, got {cfg.matrix_rank}"
            )

    def no_sync(self) -> contextlib.AbstractContextManager[None]:
        """Accumulation: DDP's own ``no_sync`` (gradients accumulate locally, no all-reduce)."""
        if self._wrapped is None:
            return contextlib.nullcontext()
        return self._wrapped.no_sync()

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        # what DDP buckets: the parameters that train, in registration order
        self._params = [p for p in model.parameters() if p.requires_grad]
        self._pindex = {id(p): i for i, p in enumerate(self._params)}
        if self.dist.world_size == 1:
            return model  # no process to talk to: plain local training
        device_ids = [self.dist.device.index] if self.dist.device.type == "cuda" else None
        wrapped = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=device_ids, bucket_cap_mb=self.cfg.bucket_mb
        )
        if self.cfg.ddp_hook == "powersgd":
            self._powersgd = torch_powersgd.PowerSGDState(
                process_group=None,
                matrix_approximation_rank=self.cfg.matrix_rank,
                start_powerSGD_iter=max(2, self.cfg.start_iter),
                min_compression_rate=self.cfg.min_compression_rate,
                warm_start=self.cfg.warm_start,
                random_seed=0,
            )
        wrapped.register_comm_hook(None, self._hook)
        self._wrapped = wrapped
        return wrapped

    # deliberately unannotated: DDP compares the annotations with the class objects
    # dist.GradBucket / torch.futures.Future[torch.Tensor], and postponed (string) annotations
    # never match
    def _hook(self, state, bucket):
        fut = self._reduce(bucket) if self._settled else self._checked(bucket)
        self._last_launch = time.perf_counter()
        return fut

    def _reduce(self, bucket: Any) -> torch.futures.Future[Any]:
        """Hand one bucket (DDP's or a :class:`_Bucket`) to the PowerSGD or all-reduce hook."""
        buffer = bucket.buffer()
        if self._powersgd is not None:
            # one bucket's chain at a time: its P and Q all-reduces are issued from callbacks on
            # gloo's threads, so two buckets in flight issue collectives in a rank-dependent
            # order (a size mismatch or a hang with more than one bucket)
            if self._inflight is not None and not self._inflight.done():
                t0 = time.perf_counter()
                self._inflight.wait()
                self._hook_wait += time.perf_counter() - t0
            before = self._powersgd.total_numel_after_compression
            fut = torch_powersgd.powerSGD_hook(self._powersgd, bucket)
            sent = self._powersgd.total_numel_after_compression - before
            # before start_powerSGD_iter the hook all-reduces the bucket uncompressed
            self._count(sent * buffer.element_size() if sent else self.nbytes(buffer))
            self._inflight = fut
        else:
            self._count(self.nbytes(buffer))
            fut = default_hooks.allreduce_hook(_default_group(), bucket)
        return fut

    def _checked(self, bucket: Any) -> torch.futures.Future[Any]:
        """Until DDP's layout is final: reduce the bucket if it is the reference's, else hold it
        back for :meth:`_emulate` (and everything after it: buckets go out in index order)."""
        key = tuple(self._pindex[id(p)] for p in bucket.parameters())
        index, ref = bucket.index(), self._reference
        self._seen.append(key)
        if not self._deferred and (ref is None or (index < len(ref) and ref[index] == key)):
            fut = self._reduce(bucket)
        else:
            fut = torch.futures.Future()
            self._deferred.append((bucket.buffer(), key, fut))
        if bucket.is_last():
            if self._deferred:
                self._emulate()
            layout, self._seen = self._seen, []
            self._hook_iters += 1
            if self._hook_iters >= 2:  # this iteration ran in DDP's rebuilt (final) layout
                if self._reference is None:
                    self._reference = layout
                self._settled = layout == self._reference
        return fut

    def _emulate(self) -> None:
        """Reduce the held-back gradients bucket by bucket in the reference layout."""
        assert self._reference is not None
        deferred, self._deferred = self._deferred, []
        grads: dict[int, torch.Tensor] = {}  # parameter index → its slice of a real buffer
        for buffer, key, _ in deferred:
            offset = 0
            for i in key:
                n = self._params[i].numel()
                grads[i] = buffer[offset : offset + n]
                offset += n
            assert offset == buffer.numel(), "DDP bucket buffers are dense concatenations"
        count = len(self._reference)
        for index, key in enumerate(self._reference):
            if key[0] not in grads:
                continue  # reduced directly: the same bucket as the reference's
            assert all(i in grads for i in key), "held-back buckets cover reference buckets"
            buffer = torch.cat([grads[i] for i in key])
            params = [self._params[i] for i in key]
            out = self._reduce(_Bucket(index, count, buffer, params)).wait()
            offset = 0
            for i in key:
                n = self._params[i].numel()
                grads[i].copy_(out[offset : offset + n])
                offset += n
        for buffer, _, fut in deferred:
            fut.set_result(buffer)

    def setup(self, model: torch.nn.Module) -> None:
        # DDP broadcast rank 0's state when wrapping; only the dense size is needed here
        self.dense_bytes_per_step = sum(
            p.numel() * 4 for p in model.parameters() if p.requires_grad
        )

    def exposed_in_backward(self) -> float:
        """The wait after the last bucket's launch, plus what hooks waited for earlier buckets
        (PowerSGD's one-bucket-at-a-time rule) — both communication inside backward."""
        waited, self._hook_wait = self._hook_wait, 0.0
        if self._last_launch is None:
            return waited
        waited += time.perf_counter() - self._last_launch
        self._last_launch = None
        return waited

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        out = super().state_dict()
        out["layout"] = None if self._reference is None else [list(k) for k in self._reference]
        st = self._powersgd
        out["powersgd"] = None
        if st is not None:
            out["powersgd"] = {
                "iter": st.iter,
                "rng": numpy_rng_state(st.rng),
                "error": {b: cpu_copy(t) for b, t in st.error_dict.items()},
                "p": {b: cpu_copy(t) for b, t in st.p_memory_dict.items()},
                "q": {b: cpu_copy(t) for b, t in st.q_memory_dict.items()},
                "numel_before": st.total_numel_before_compression,
                "numel_after": st.total_numel_after_compression,
                "next_stats_report": st.next_stats_report,
            }
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` into the wrapped DDP's hook state (after :meth:`wrap`)."""
        super().load_state_dict(state)
        layout = state["layout"]
        if layout is not None:
            flat = sorted(i for key in layout for i in key)
            if flat != list(range(len(self._params))):
                raise ValueError(
                    f"checkpointed DDP bucket layout covers {len(flat)} parameters, this model "
                    f"has {len(self._params)} (a checkpoint of another model)"
                )
            self._reference = [tuple(int(i) for i in key) for key in layout]
            self._settled = False
        saved, st = state["powersgd"], self._powersgd
        if (saved is None) != (st is None):
            raise ValueError(
                "the checkpoint's DDP communication hook differs from this run's "
                f"(algorithm.ddp_hook = {self.cfg.ddp_hook})"
            )
        if saved is None:
            return
        assert self._reference is not None or not saved["error"], "state implies a layout"
        device = self._params[0].device if self._params else torch.device("cpu")

        def put(t: torch.Tensor, what: str) -> torch.Tensor:
            return restore(t, tuple(t.shape), what, device, t.dtype)

        for b, t in saved["error"].items():
            assert self._reference is not None
            numel = sum(self._params[i].numel() for i in self._reference[b])
            st.error_dict[b] = restore(t, (numel,), f"bucket {b} residual", device, t.dtype)
        st.p_memory_dict = {b: put(t, f"bucket {b} P") for b, t in saved["p"].items()}
        st.q_memory_dict = {b: put(t, f"bucket {b} Q") for b, t in saved["q"].items()}
        st.iter = int(saved["iter"])
        load_numpy_rng_state(st.rng, saved["rng"])
        st.total_numel_before_compression = int(saved["numel_before"])
        st.total_numel_after_compression = int(saved["numel_after"])
        st.next_stats_report = int(saved["next_stats_report"])

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        out["ddp_hook"] = self.cfg.ddp_hook
        return out
