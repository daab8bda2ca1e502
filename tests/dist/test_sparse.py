"""Top-k / random-k sparsification with error feedback, on real multi-process gloo groups.

Each spawned rank runs all the checks of one world size and returns what it saw (the raw
gradients it had, what ``reduce_gradients`` made of them, its memory, its counters); references
are computed here from every rank's raw gradients.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from mlbench.algorithms.allreduce import AllReduce
from mlbench.algorithms.flat import flatten_grads, write_grads
from mlbench.algorithms.sparse import RandomK, TopK, derive_seed, num_selected
from mlbench.dist import DistContext
from mlbench.errors import ConfigError
from mlbench.testing import run_ranks, scheme_config

D = 22  # parameters of _model(): not a multiple of 8, several tensors
STEPS = 2
TOPK_FRACTION = 0.25  # k = ceil(5.5) = 6
RANDK_FRACTION = 0.3  # k = ceil(6.6) = 7


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))


def _params(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return list(model.parameters())


def _synthetic(world: int, step: int, rank: int) -> torch.Tensor:
    """Rank ``rank``'s gradient at ``step`` (all ranks draw the same table, keep their row)."""
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randn(world, D, generator=g)[rank]


def _sgd_step(model: torch.nn.Module, lr: float) -> None:
    """Plain SGD by hand (torch.optim's first step imports torch._dynamo: ~1.5 s per rank)."""
    with torch.no_grad():
        for p in model.parameters():
            p.sub_(p.grad, alpha=lr)


def _set(model: torch.nn.Module, flat: torch.Tensor) -> None:
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    write_grads(_params(model), flat)


def _run_steps(algo: Any, ctx: DistContext, model: torch.nn.Module) -> dict[str, list[Any]]:
    rec: dict[str, list[Any]] = {"raw": [], "out": [], "mem": [], "bytes": [], "idx": []}
    for step in range(STEPS):
        _set(model, _synthetic(ctx.world_size, step, ctx.rank))
        rec["raw"].append(flatten_grads(_params(model)))
        before = algo.bytes_sent, algo.collectives
        algo.reduce_gradients(model)
        rec["bytes"].append((algo.bytes_sent - before[0], algo.collectives - before[1]))
        rec["out"].append(flatten_grads(_params(model)))
        rec["mem"].append(None if algo.memory is None else algo.memory.clone())
        rec["idx"].append(algo.last_indices.clone())
    return rec


def _fraction_one(ctx: DistContext) -> list[list[torch.Tensor]]:
    """fraction = 1: the gradients of all-reduce, top-k and random-k (compared by the caller)."""
    torch.manual_seed(10 + ctx.rank)
    x, y = torch.randn(8, 5), torch.randn(8, 1)
    models = [_model() for _ in range(3)]
    for m in models:
        torch.nn.functional.mse_loss(m(x), y).backward()
    AllReduce(scheme_config("allreduce", mode="gradients"), ctx).reduce_gradients(models[0])
    TopK(scheme_config("topk", fraction=1.0), ctx).reduce_gradients(models[1])
    RandomK(scheme_config("randomk", fraction=1.0), ctx, seed=3).reduce_gradients(models[2])
    return [[p.grad.clone() for p in m.parameters()] for m in models]


def _randomk_reproducible(ctx: DistContext) -> list[torch.Tensor]:
    """Same seed → same index sequence; the default seed is torch's run seed."""
    cfg = scheme_config("randomk", fraction=RANDK_FRACTION)
    torch.manual_seed(1234)
    algos = [RandomK(cfg, ctx), RandomK(cfg, ctx, seed=1234), RandomK(cfg, ctx, seed=99)]
    picks: list[list[torch.Tensor]] = []
    for algo in algos:
        algo.d, algo.k = D, num_selected(RANDK_FRACTION, D)
        picks.append([algo.select(torch.zeros(D)) for _ in range(3)])
    assert all(torch.equal(a, b) for a, b in zip(picks[0], picks[1], strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(picks[0], picks[2], strict=True))
    return picks[1]


def _train(
    ctx: DistContext, lr: float = 0.2
) -> tuple[list[float], list[torch.Tensor], dict[str, Any]]:
    """A tiny regression trained with top-k (fraction 0.1, error feedback)."""
    model = _model()
    if ctx.rank > 0:  # setup() must bring every rank to rank 0's weights
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.5)
    algo = TopK(scheme_config("topk", fraction=0.1), ctx)
    algo.setup(model)
    g = torch.Generator().manual_seed(77 + ctx.rank)
    w_true = torch.arange(5, dtype=torch.float32).reshape(5, 1) / 5
    losses = []
    for _ in range(25):
        x = torch.randn(16, 5, generator=g)
        loss = torch.nn.functional.mse_loss(model(x), x @ w_true + 0.3)
        model.zero_grad()
        loss.backward()
        algo.reduce_gradients(model)
        _sgd_step(model, lr)
        losses.append(loss.item())
    return losses, [p.detach().clone() for p in model.parameters()], algo.stats()


def _sparse_rank(ctx: DistContext) -> dict[str, Any]:
    fraction_one = _fraction_one(ctx)
    topk = _run_steps(TopK(scheme_config("topk", fraction=TOPK_FRACTION), ctx), ctx, _model())
    no_ef = _run_steps(
        TopK(scheme_config("topk", fraction=TOPK_FRACTION, error_feedback=False), ctx),
        ctx,
        _model(),
    )
    randk_algo = RandomK(scheme_config("randomk", fraction=RANDK_FRACTION), ctx, seed=5)
    randk = _run_steps(randk_algo, ctx, _model())
    return {
        "fraction_one": fraction_one,
        "topk": topk,
        "no_ef": no_ef,
        "randk": randk,
        "randk_seed_picks": _randomk_reproducible(ctx),
        "train": _train(ctx) if ctx.world_size == 2 else None,  # one world size is enough
    }


def _sparsify(p: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(p)
    out[idx] = p[idx]
    return out


def _check_against_reference(
    results: list[dict[str, Any]], key: str, k: int, error_feedback: bool, topk: bool
) -> None:
    world = len(results)
    memory = [torch.zeros(D) for _ in range(world)]
    for step in range(STEPS):
        sparse = []
        for r in range(world):
            rec = results[r][key]
            p = rec["raw"][step] + memory[r]
            idx = rec["idx"][step]
            assert idx.numel() == k and idx.unique().numel() == k
            assert int(idx.min()) >= 0 and int(idx.max()) < D
            if topk:
                want_idx = torch.topk(p.abs(), k).indices
                assert set(idx.tolist()) == set(want_idx.tolist())
            s = _sparsify(p, idx)
            sparse.append(s)
            if error_feedback:
                memory[r] = p - s  # the recursion, by hand
                torch.testing.assert_close(rec["mem"][step], memory[r])
            else:
                assert rec["mem"][step] is None
        expected = torch.stack(sparse).mean(0)
        for r in range(world):
            rec = results[r][key]
            torch.testing.assert_close(rec["out"][step], expected, rtol=1e-6, atol=1e-7)
            # k fp32 values + k int32 indices, in two all_gathers
            assert rec["bytes"][step] == (k * (4 + 4), 2)


@pytest.mark.parametrize(
    "world",
    [
        pytest.param(2, marks=pytest.mark.world_size(2)),
        pytest.param(4, marks=pytest.mark.world_size(4)),
    ],
)
def test_sparsified_sgd_matches_reference(world: int) -> None:
    results = run_ranks(_sparse_rank, world)
    k_top, k_rand = num_selected(TOPK_FRACTION, D), num_selected(RANDK_FRACTION, D)
    assert (k_top, k_rand) == (6, 7)
    for r in range(world):  # fraction = 1 is plain all-reduce averaging
        allreduce, *sparse = results[r]["fraction_one"]
        for grads in sparse:
            for got, want in zip(grads, allreduce, strict=True):
                torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(allreduce[0], results[0]["fraction_one"][0][0])  # averaged
    _check_against_reference(results, "topk", k_top, error_feedback=True, topk=True)
    _check_against_reference(results, "no_ef", k_top, error_feedback=False, topk=True)
    _check_against_reference(results, "randk", k_rand, error_feedback=True, topk=False)

    # random-k: each rank draws its own indices (per-rank seed), reproducibly
    for key in ("randk", "randk_seed_picks"):
        picks = [r["randk"]["idx"][0] if key == "randk" else r[key][0] for r in results]
        assert not any(torch.equal(picks[0], other) for other in picks[1:])
    assert len({derive_seed("mlbench-randomk", 5, r) for r in range(world)}) == world

    # training (2 ranks): loss goes down, replicas stay identical, stats describe the compression
    if world != 2:
        return
    _, first_params, stats = results[0]["train"]
    for r in range(world):
        losses, params, _ = results[r]["train"]
        assert sum(losses[-5:]) < 0.5 * sum(losses[:5]), losses
        for a, b in zip(params, first_params, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert stats["k"] == 3  # ceil(0.1 · 22)
    assert stats["compression_ratio"] == pytest.approx(D * 4 / (3 * 8))
    assert stats["bytes_sent"] == D * 4 + 25 * 3 * 8  # rank 0: setup broadcast + 25 steps


def _world_one(ctx: DistContext) -> list[tuple[int, bool, dict[str, Any]]]:
    out = []
    for algo in (
        TopK(scheme_config("topk", fraction=0.1), ctx),
        RandomK(scheme_config("randomk", fraction=0.1), ctx),
    ):
        model = _model()
        algo.setup(model)
        model(torch.randn(4, 5)).sum().backward()
        before = flatten_grads(_params(model))
        algo.reduce_gradients(model)
        unchanged = torch.equal(before, flatten_grads(_params(model)))
        out.append((algo.bytes_sent, unchanged and algo.memory is None, algo.stats()))
    return out


def test_world_size_one_is_plain_local_training() -> None:
    # no process group at all: with one rank a scheme must not call torch.distributed
    per_algorithm = _world_one(DistContext(0, 1, 0, "gloo", torch.device("cpu")))
    for sent, unchanged, stats in per_algorithm:
        assert sent == 0 and unchanged
        assert stats["compression_ratio"] == 1.0


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, float("nan")])
def test_check_config_rejects_fraction_outside_unit_interval(fraction: float) -> None:
    for cls in (TopK, RandomK):
        with pytest.raises(ConfigError, match=r"algorithm\.fraction must be in \(0, 1\]"):
            cls.check_config(scheme_config("topk", fraction=fraction), world_size=2)


def test_check_config_accepts_valid_fractions() -> None:
    for fraction in (1e-6, 0.01, 1.0):
        TopK.check_config(scheme_config("topk", fraction=fraction), world_size=2)


def test_k_is_ceil_of_fraction_times_d() -> None:
    assert num_selected(0.1, 30) == 3  # 0.1 · 30 = 3.0000000000000004 in floats
    assert num_selected(0.01, 270_000) == 2700
    assert num_selected(0.25, 22) == 6
    assert num_selected(1e-9, 5) == 1
    assert num_selected(1.0, 7) == 7
