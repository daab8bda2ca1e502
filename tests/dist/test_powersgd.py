"""PowerSGD on real multi-process gloo groups, checked against PyTorch's own DDP PowerSGD hook."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as torch_powersgd

from mlbench.algorithms.powersgd import PowerSGD, compressed_order, orthogonalize
from mlbench.dist import DistContext
from mlbench.errors import ConfigError
from mlbench.testing import run_ranks, scheme_config

PER_RANK = 4


class _Net(torch.nn.Module):
    """Conv + linear + biases. Registered out of forward order on purpose: DDP lays its bucket out
    in gradient-ready order, so Q's random fill only matches if we do too. Two (16, 16) matrices
    with other shapes between them exercise the hook's grouping by shape; ``head`` (5, 16) and
    ``conv2`` (4, 72) are matrices too small to compress at rank 2."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(16, 5)
        self.fc2 = torch.nn.Linear(16, 16)
        self.conv2 = torch.nn.Conv2d(8, 4, 3)
        self.fc1 = torch.nn.Linear(64, 16)
        self.up = torch.nn.Linear(16, 32)
        self.down = torch.nn.Linear(32, 16)
        self.fc3 = torch.nn.Linear(16, 16)
        self.conv1 = torch.nn.Conv2d(3, 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv2(F.relu(self.conv1(x)))).flatten(1)
        for layer in (self.fc1, self.fc2, self.up, self.down, self.fc3):
            x = F.relu(layer(x))
        return self.head(x)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return _Net()


def _batch(ctx: DistContext, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(ctx.world_size * PER_RANK, 3, 8, 8, generator=g)
    y = torch.randint(0, 5, (ctx.world_size * PER_RANK,), generator=g)
    lo = ctx.rank * PER_RANK
    return x[lo : lo + PER_RANK], y[lo : lo + PER_RANK]


def _backward(model: torch.nn.Module, ctx: DistContext, step: int) -> None:
    x, y = _batch(ctx, step)
    F.cross_entropy(model(x), y).backward()


# ---------------------------------------------------------------------- equivalence with torch
CASES: list[dict[str, Any]] = [
    # rank, warm start, start iter, min compression rate, seed, momentum, steps
    dict(rank=2, warm_start=True, start_iter=2, rate=2.0, seed=0, momentum=0.0, steps=5),
    dict(rank=1, warm_start=True, start_iter=3, rate=1.5, seed=7, momentum=0.9, steps=6),
    dict(rank=3, warm_start=False, start_iter=2, rate=2.0, seed=3, momentum=0.9, steps=5),
]


def _run_torch_hook(ctx: DistContext, case: dict[str, Any]) -> list[list[torch.Tensor]]:
    model = _model()
    ddp = torch.nn.parallel.DistributedDataParallel(model, bucket_cap_mb=100)
    state = torch_powersgd.PowerSGDState(
        process_group=None,
        matrix_approximation_rank=case["rank"],
        start_powerSGD_iter=case["start_iter"],
        min_compression_rate=case["rate"],
        use_error_feedback=True,
        warm_start=case["warm_start"],
        random_seed=case["seed"],
    )
    buckets: list[int] = []

    def hook(s, bucket):  # no annotations: DDP rejects the string ones (future import)
        buckets.append(bucket.index())
        return torch_powersgd.powerSGD_hook(s, bucket)

    ddp.register_comm_hook(state, hook)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=case["momentum"])
    trajectory = []
    for step in range(case["steps"]):
        opt.zero_grad()
        _backward(ddp, ctx, step)
        opt.step()
        trajectory.append([p.detach().clone() for p in model.parameters()])
    assert buckets == [0] * case["steps"], "the reference must run with exactly one bucket"
    return trajectory


def _run_native(ctx: DistContext, case: dict[str, Any]) -> tuple[list[list[torch.Tensor]], bool]:
    model = _model()
    cfg = scheme_config(
        "powersgd",
        matrix_rank=case["rank"],
        warm_start=case["warm_start"],
        start_iter=case["start_iter"],
        min_compression_rate=case["rate"],
    )
    algo = PowerSGD(cfg, ctx, seed=case["seed"])
    algo.setup(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=case["momentum"])
    trajectory = []
    for step in range(case["steps"]):
        opt.zero_grad()
        _backward(model, ctx, step)
        algo.reduce_gradients(model)
        opt.step()
        algo.after_step(model)
        trajectory.append([p.detach().clone() for p in model.parameters()])
    index = {id(p): i for i, p in enumerate(model.parameters())}
    assert algo._order is not None
    order = [index[id(p)] for p in algo._order]
    order_differs = order != sorted(order, reverse=True)
    return trajectory, order_differs


def _equivalence_rank(ctx: DistContext) -> list[tuple[float, float, bool]]:
    """Per case: (max |native − torch| over steps and parameters, max |update|, order_differs)."""
    out = []
    for case in CASES:
        reference = _run_torch_hook(ctx, case)
        native, order_differs = _run_native(ctx, case)
        start = [p.detach() for p in _model().parameters()]
        diff = scale = 0.0
        for ref_step, nat_step in zip(reference, native, strict=True):
            for r, n, s in zip(ref_step, nat_step, start, strict=True):
                diff = max(diff, (r - n).abs().max().item())
                scale = max(scale, (r - s).abs().max().item())
        out.append((diff, scale, order_differs))
    return out


def _check_equivalence(results: list[list[tuple[float, float, bool]]]) -> None:
    for per_case in results:
        for (diff, scale, order_differs), case in zip(per_case, CASES, strict=True):
            assert scale > 1e-2, case  # the parameters did move
            assert diff <= 1e-6, (case, diff)  # observed ≤ 3e-8; wrong order or no EF: ≥ 5e-5
            assert order_differs  # the model really tests gradient-ready ordering


# ---------------------------------------------------------------------- bytes and exactness
# matrix views at rank 2, rate 2: compressed iff (n + m)·2·2 < n·m
_COMPRESSED = [(16, 16), (16, 32), (32, 16), (16, 64), (16, 16), (8, 27)]  # fc3 down up fc1 fc2 c1
_UNCOMPRESSED_NUMEL = 5 * 16 + 4 * 72 + (5 + 16 * 4 + 32 + 4 + 8)  # head.w, conv2.w, all biases


def _bytes_rank(ctx: DistContext) -> dict[str, Any]:
    model = _model()
    cfg = scheme_config("powersgd", matrix_rank=2, start_iter=2, min_compression_rate=2.0)
    algo = PowerSGD(cfg, ctx)
    algo.setup(model)
    per_step = []
    for step in range(5):
        model.zero_grad()
        _backward(model, ctx, step)
        before = (algo.bytes_sent, algo.collectives)
        algo.reduce_gradients(model)
        per_step.append((algo.bytes_sent - before[0], algo.collectives - before[1]))
    return {"per_step": per_step, "stats": algo.stats(), "dense": algo.dense_bytes_per_step}


def _exact_rank(ctx: DistContext) -> list[tuple[float, float]]:
    """Full rank, every matrix compressed: the result must be the exact average, every step."""
    model = _model()
    cfg = scheme_config("powersgd", matrix_rank=64, start_iter=1, min_compression_rate=0.0)
    algo = PowerSGD(cfg, ctx)  # rate 0 is refused by check_config; here it forces compression
    algo.setup(model)
    out = []
    for step in range(4):
        model.zero_grad()
        _backward(model, ctx, step)
        mean = [p.grad.clone() for p in model.parameters()]
        for g in mean:
            dist.all_reduce(g)
            g.div_(ctx.world_size)
        algo.reduce_gradients(model)
        err = max(
            (p.grad - m).abs().max().item() for p, m in zip(model.parameters(), mean, strict=True)
        )
        if algo._layout is None:  # step 0: plain all-reduce, no residual yet
            out.append((err, 0.0))
            continue
        residual = algo._layout.error.clone()
        dist.all_reduce(residual)  # the ranks' residuals cancel: nothing is carried over
        out.append((err, residual.abs().max().item()))
    assert step >= cfg.start_iter and algo._layout is not None
    params = algo._layout.params  # every matrix went through P and Q; only biases did not
    assert all(params[i].dim() == 1 for i in algo._layout.uncompressed)
    return out


def _overflow_rank(ctx: DistContext) -> dict[str, bool]:
    """An inf gradient on one rank (fp16 overflow) must not poison the residual or later steps."""
    model = _model()
    algo = PowerSGD(scheme_config("powersgd", matrix_rank=2, start_iter=1), ctx)
    algo.setup(model)
    out = {}
    for step in range(4):
        model.zero_grad()
        _backward(model, ctx, step)
        if step == 2 and ctx.rank == 1:
            model.fc1.weight.grad[0, 0] = float("inf")
        before = algo._layout.error.clone() if algo._layout is not None else None
        algo.reduce_gradients(model)
        if step == 2:
            assert algo._layout is not None and before is not None
            out["residual_kept"] = torch.equal(algo._layout.error, before)
            out["q_redrawn"] = not algo._layout.q_ready
        if step == 3:
            out["recovered"] = all(bool(torch.isfinite(p.grad).all()) for p in model.parameters())
            assert algo._layout is not None
            out["residual_finite"] = bool(torch.isfinite(algo._layout.error).all())
    return out


def _two_rank_checks(ctx: DistContext) -> dict[str, Any]:
    """Everything the two-rank tests need, from one spawn (each costs seconds)."""
    return {
        "equivalence": _equivalence_rank(ctx),
        "bytes": _bytes_rank(ctx),
        "exact": _exact_rank(ctx),
        "overflow": _overflow_rank(ctx),
    }


@pytest.fixture(scope="module")
def two_ranks() -> list[dict[str, Any]]:
    return run_ranks(_two_rank_checks, 2)


@pytest.mark.world_size(2)
def test_matches_torch_powersgd_hook_two_ranks(two_ranks: list[dict[str, Any]]) -> None:
    _check_equivalence([r["equivalence"] for r in two_ranks])


@pytest.mark.world_size(4)
def test_matches_torch_powersgd_hook_four_ranks() -> None:
    _check_equivalence(run_ranks(_equivalence_rank, 4))


@pytest.mark.world_size(2)
def test_bytes_per_step_equal_p_q_and_uncompressed(two_ranks: list[dict[str, Any]]) -> None:
    payload = 4 * (sum((n + m) * 2 for n, m in _COMPRESSED) + _UNCOMPRESSED_NUMEL)
    for rank, result in enumerate(two_ranks):
        info = result["bytes"]
        dense = info["dense"]
        assert dense == 4 * sum(p.numel() for p in _model().parameters())
        order_broadcast = 8 * 16 if rank == 0 else 0  # once: rank 0's gradient order (int64)
        first, *rest = info["per_step"]
        assert first == (dense + order_broadcast, 1 + (rank == 0))
        assert rest == [(dense, 1)] + [(payload, 3)] * 3  # plain step 1, then P, Q, uncompressed
        assert info["stats"]["payload_bytes_per_compressed_step"] == payload
        assert info["stats"]["compression_ratio"] == pytest.approx(dense / payload)
        assert info["stats"]["rank"] == 2 and info["stats"]["compressed_steps"] == 3


@pytest.mark.world_size(2)
def test_full_rank_gives_the_exact_average(two_ranks: list[dict[str, Any]]) -> None:
    for result in two_ranks:
        assert len(result["exact"]) == 4
        for err, residual in result["exact"]:
            assert err < 1e-5 and residual < 1e-5


@pytest.mark.world_size(2)
def test_overflow_step_keeps_residual_and_recovers(two_ranks: list[dict[str, Any]]) -> None:
    for result in two_ranks:
        assert result["overflow"] == {
            "residual_kept": True,
            "q_redrawn": True,
            "recovered": True,
            "residual_finite": True,
        }


# ---------------------------------------------------------------------- one rank, config, helpers
def _world_one(ctx: DistContext) -> tuple[bool, int, dict[str, Any]]:
    model = _model()
    cfg = scheme_config("powersgd", matrix_rank=1, start_iter=1)
    algo = PowerSGD(cfg, ctx)
    algo.setup(model)
    unchanged = True
    for step in range(3):
        model.zero_grad()
        _backward(model, ctx, step)
        grads = [p.grad.clone() for p in model.parameters()]
        algo.reduce_gradients(model)
        unchanged &= all(
            torch.equal(a, p.grad) for a, p in zip(grads, model.parameters(), strict=True)
        )
    return unchanged, algo.bytes_sent, algo.stats()


def test_world_size_one_is_local_training() -> None:
    [(unchanged, sent, stats)] = run_ranks(_world_one, 1)
    assert unchanged and sent == 0
    assert stats["collectives"] == 0 and stats["compression_ratio"] == 1.0


@pytest.mark.parametrize("rank", [0, -1])
def test_check_config_rejects_bad_rank(rank: int) -> None:
    with pytest.raises(ConfigError, match=r"algorithm\.matrix_rank must be ≥ 1"):
        PowerSGD.check_config(scheme_config("powersgd", matrix_rank=rank), 2)


def test_check_config_rejects_bad_rates_and_accepts_defaults() -> None:
    with pytest.raises(ConfigError, match="min_compression_rate"):
        PowerSGD.check_config(scheme_config("powersgd", min_compression_rate=0.5), 2)
    with pytest.raises(ConfigError, match="start_iter"):
        PowerSGD.check_config(scheme_config("powersgd", start_iter=0), 2)
    PowerSGD.check_config(scheme_config("powersgd"), 2)


def test_grouping_by_shape_and_orthogonalize() -> None:
    shapes = [(5,), (16, 16), (8, 3, 3, 3), (16, 16), (8, 27), (5, 16), ()]
    compressed, uncompressed = compressed_order(shapes, rank=2, min_compression_rate=2.0)
    assert compressed == [1, 3, 2, 4]  # (16,16) twice, then (8,27) — conv kernel as (8, 27)
    assert uncompressed == [0, 5, 6]
    for cols in (1, 2, 4):
        m = torch.randn(20, cols)
        m[:, 0] = 0.0  # a zero column stays zero (the hook would produce NaN)
        orthogonalize(m)
        assert torch.isfinite(m).all()
        gram = m.t() @ m
        if cols <= 2:
            expected = torch.diag(torch.tensor([0.0] + [1.0] * (cols - 1)))
            torch.testing.assert_close(gram, expected, atol=1e-5, rtol=0)
        else:
            assert torch.allclose(gram, torch.eye(cols), atol=1e-5)  # QR completes the basis
