"""Every scheme's checkpoint state gives an exact resume (real gloo, 2 ranks).

For each variant: k steps, then the model, optimizer and scheme state go through
``torch.save``/``torch.load(weights_only=True)`` as a checkpoint would; m more steps are recorded.
A fresh model/optimizer/scheme (built the same way) is set up, loaded and runs the same m steps:
its parameters must be bitwise equal after every step, on every rank, and its ``stats()`` too.
The control — the same resume without the scheme's state — must differ for every scheme that
has state (and must not for those that have none: their state really is the counters). One
process pair runs all variants, so the file costs one spawn.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from mlbench.algorithms.base import Algorithm
from mlbench.dist import DistContext
from mlbench.registry import algorithm_names, get_algorithm
from mlbench.testing import run_ranks, scheme_config

#: variant → (scheme, options, steps before the checkpoint, has state beyond the counters)
VARIANTS: dict[str, tuple[str, dict[str, Any], int, bool]] = {
    "allreduce": ("allreduce", {}, 3, False),
    "allreduce-weights": ("allreduce", {"mode": "weights"}, 3, False),
    "adam": ("adam", {"adam_lr": 1e-2}, 3, False),
    # tiny buckets: several, and DDP's rebuilt layout differs from its initial single bucket
    "ddp": ("ddp", {"bucket_mb": 0.001}, 3, False),
    "ddp-powersgd": ("ddp", {"ddp_hook": "powersgd", "bucket_mb": 0.001, "start_iter": 2}, 3, True),
    # resumed exactly at the first compressed step: the Qs are drawn in the resumed attempt
    "ddp-powersgd-at-start": (
        "ddp",
        {"ddp_hook": "powersgd", "bucket_mb": 0.001, "start_iter": 2},
        2,
        True,
    ),
    "ddp-powersgd-cold": (
        "ddp",
        {"ddp_hook": "powersgd", "bucket_mb": 0.001, "start_iter": 2, "warm_start": False},
        3,
        True,
    ),
    "powersgd": ("powersgd", {"start_iter": 2}, 3, True),
    "powersgd-cold": ("powersgd", {"start_iter": 2, "warm_start": False}, 3, True),
    "gossip": ("gossip", {}, 3, False),
    "topk": ("topk", {"fraction": 0.1}, 3, True),
    "randomk": ("randomk", {"fraction": 0.1}, 3, True),
    "signsgd-ef": ("signsgd", {}, 3, True),
    "signsgd-majority": ("signsgd", {"sign_variant": "majority"}, 3, False),
    # 4 steps into a period of 3: the next average is at step 6, not 3 steps after the resume
    "localsgd": ("localsgd", {"local_steps": 3}, 4, True),
}
AFTER = 4  # steps after the checkpoint
PER_RANK = 8


class _Net(torch.nn.Module):
    """Two compressible matrices of different shapes (PowerSGD at rank 2) and a head too small
    to compress; 676 gradient entries, so top-k at 10% sends 68 of them. A frozen parameter
    first: it is in ``parameters()`` but in no gradient, no bucket and no memory."""

    def __init__(self) -> None:
        super().__init__()
        self.temperature = torch.nn.Parameter(torch.full((4,), 2.0), requires_grad=False)
        self.fc1 = torch.nn.Linear(20, 16)
        self.fc2 = torch.nn.Linear(16, 16)
        self.head = torch.nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x))))) / self.temperature


def _batch(rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * rank + step)
    return torch.randn(PER_RANK, 20, generator=g), torch.randint(0, 4, (PER_RANK,), generator=g)


class _Run:
    """One scheme on one rank, built as the loop builds it: seed, scheme, model, wrap, optimizer,
    setup."""

    def __init__(self, ctx: DistContext, scheme: str, options: dict[str, Any]) -> None:
        torch.manual_seed(0)  # the run seed: model init, and random-k's generator seed
        self.algo: Algorithm = get_algorithm(scheme)(scheme_config(scheme, **options), ctx)
        self.module = _Net()
        self.model = self.algo.wrap(self.module)
        task_optimizer = torch.optim.SGD(self.module.parameters(), lr=0.1, momentum=0.9)
        self.optimizer = self.algo.build_optimizer(self.module, task_optimizer)
        self.algo.setup(self.model)
        self.rank = ctx.rank

    def step(self, step: int) -> list[torch.Tensor]:
        """The loop's plain step; returns the parameters after it."""
        x, y = _batch(self.rank, step)
        out = self.model(x)
        self.algo.zero_grad(self.optimizer)
        F.cross_entropy(out, y).backward()
        if self.algo.overlaps:
            self.algo.exposed_in_backward()
        self.algo.reduce_gradients(self.model)
        self.optimizer.step()
        self.algo.after_step(self.model)
        return [p.detach().clone() for p in self.module.parameters()]

    def checkpoint(self) -> bytes:
        buf = io.BytesIO()
        torch.save(
            {
                "model": self.module.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "algorithm": self.algo.state_dict(),
            },
            buf,
        )
        return buf.getvalue()

    def resume(self, blob: bytes, *, scheme_state: bool) -> None:
        """Load a checkpoint after ``setup`` (which broadcasts rank 0's model: per-rank models —
        gossip, local SGD — must be loaded after it)."""
        ckpt = torch.load(io.BytesIO(blob), weights_only=True)
        self.module.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if scheme_state:
            self.algo.load_state_dict(ckpt["algorithm"])


def _tensors(x: Any) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, dict):
        return [t for v in x.values() for t in _tensors(v)]
    if isinstance(x, (list, tuple)):
        return [t for v in x for t in _tensors(v)]
    return []


def _variant(ctx: DistContext, scheme: str, options: dict[str, Any], before: int) -> dict[str, Any]:
    first = _Run(ctx, scheme, options)
    for s in range(before):
        first.step(s)
    blob = first.checkpoint()
    live = first.algo.state_dict()  # must not change as training goes on (copies, not views)
    live_tensors = [t.clone() for t in _tensors(live)]
    straight = [first.step(before + s) for s in range(AFTER)]
    live_unchanged = all(
        torch.equal(a, b) for a, b in zip(_tensors(live), live_tensors, strict=True)
    )

    runs = {}
    for label, load in (("resumed", True), ("control", False)):
        run = _Run(ctx, scheme, options)
        run.resume(blob, scheme_state=load)
        runs[label] = ([run.step(before + s) for s in range(AFTER)], run.algo)
    resumed, algo = runs["resumed"]
    control, _ = runs["control"]

    def same(a: list[list[torch.Tensor]], b: list[list[torch.Tensor]]) -> list[bool]:
        return [
            all(torch.equal(x, y) for x, y in zip(p, q, strict=True))
            for p, q in zip(a, b, strict=True)
        ]

    return {
        "resumed_equal": same(straight, resumed),
        "control_equal": all(same(straight, control)),
        "stats": (first.algo.stats(), algo.stats()),
        "live_unchanged": live_unchanged,
        "state_keys": sorted(first.algo.state_dict()),
        "cpu": all(t.device.type == "cpu" for t in _tensors(live)),
    }


def _without_layout(ctx: DistContext) -> str:
    """DDP + PowerSGD resumed with its state but *without* the reference bucket layout: the
    hook then runs the loaded per-bucket state in DDP's initial single bucket. Returns the
    error (each rank raises before any collective, so nothing hangs)."""
    scheme, options, before, _ = VARIANTS["ddp-powersgd"]
    first = _Run(ctx, scheme, options)
    for s in range(before):
        first.step(s)
    run = _Run(ctx, scheme, options)
    run.resume(first.checkpoint(), scheme_state=True)
    run.algo._reference = None  # type: ignore[attr-defined]  # what the layout is there for
    try:
        run.step(before)
    except RuntimeError as exc:
        return str(exc)
    return ""


def _all_variants(ctx: DistContext) -> dict[str, Any]:
    out: dict[str, Any] = {
        name: _variant(ctx, scheme, options, before)
        for name, (scheme, options, before, _) in VARIANTS.items()
    }
    out["without_layout"] = _without_layout(ctx)
    return out


@pytest.fixture(scope="module")
def results() -> list[dict[str, Any]]:
    return run_ranks(_all_variants, 2, timeout=180.0)


def test_every_registered_scheme_is_covered() -> None:
    assert {scheme for scheme, *_ in VARIANTS.values()} == set(algorithm_names())


@pytest.mark.world_size(2)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_resume_is_bitwise_identical(results: list[dict[str, Any]], variant: str) -> None:
    stateful = VARIANTS[variant][3]
    for rank, per_rank in enumerate(results):
        r = per_rank[variant]
        assert r["resumed_equal"] == [True] * AFTER, f"rank {rank}: {r['resumed_equal']}"
        before, after = r["stats"]
        assert before == after, f"rank {rank}: stats() differ after the resume"
        assert r["live_unchanged"], f"rank {rank}: state_dict() holds views of live buffers"
        assert r["cpu"]
        # the control: without the scheme's state the run goes elsewhere iff there is state
        assert r["control_equal"] is not stateful, f"rank {rank}: control"


@pytest.mark.world_size(2)
def test_ddp_powersgd_needs_its_reference_layout(results: list[dict[str, Any]]) -> None:
    # the residual of the rebuilt bucket 0 (340 entries) meets the initial single bucket (676)
    for per_rank in results:
        assert "must match the size" in per_rank["without_layout"], per_rank["without_layout"]


def _ddp_only(ctx: DistContext) -> dict[str, Any]:
    scheme, options, before, _ = VARIANTS["ddp"]
    return _variant(ctx, scheme, options, before)


@pytest.mark.world_size(3)
def test_plain_ddp_resumes_in_its_reference_buckets_with_three_ranks() -> None:
    # With 3 ranks gloo's sums depend on where an entry sits in its bucket, so DDP's first
    # resumed step (initial single bucket) only matches when it runs in the saved layout: the
    # control, without the scheme's state, is off in the last bits.
    for rank, r in enumerate(run_ranks(_ddp_only, 3, timeout=180.0)):
        assert r["resumed_equal"] == [True] * AFTER, f"rank {rank}: {r['resumed_equal']}"
        assert r["stats"][0] == r["stats"][1]
        assert not r["control_equal"], f"rank {rank}: the layout made no difference"
