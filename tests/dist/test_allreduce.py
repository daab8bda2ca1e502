"""Equivalence tests for the all-reduce scheme on real multi-process gloo groups."""

from __future__ import annotations

import pytest
import torch

from mlbench.algorithms.allreduce import AllReduce, make_buckets
from mlbench.dist import DistContext
from mlbench.testing import run_ranks, scheme_config

STEPS = 3


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 5)
    )


def _batches(world_size: int, per_rank: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(123)
    return [
        (
            torch.randn(world_size * per_rank, 3, 8, 8, generator=g),
            torch.randint(0, 5, (world_size * per_rank,), generator=g),
        )
        for _ in range(STEPS)
    ]


def _sgd(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)


def _gradient_rank(
    ctx: DistContext, per_rank: int, bucket_mb: float, zero: str = "algorithm"
) -> tuple[list[torch.Tensor], int]:
    model = _model()
    # different init on rank 1: setup() must broadcast rank 0's weights
    if ctx.rank == 1:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
    opt = _sgd(model)
    algo = AllReduce(scheme_config("allreduce", mode="gradients", bucket_mb=bucket_mb), ctx)
    algo.setup(model)
    for x, y in _batches(ctx.world_size, per_rank):
        lo = ctx.rank * per_rank
        loss = torch.nn.functional.cross_entropy(
            model(x[lo : lo + per_rank]), y[lo : lo + per_rank]
        )
        if zero == "algorithm":
            algo.zero_grad(opt)  # as the loop does: gradients stay views into the buckets
        else:
            opt.zero_grad()  # a caller dropping the views: each step must fall back, correctly
        loss.backward()
        algo.reduce_gradients(model)
        opt.step()
        algo.after_step(model)
    return [p.detach().clone() for p in model.parameters()], algo.view_fallbacks


def _single_process(world_size: int, per_rank: int) -> list[torch.Tensor]:
    model = _model()
    opt = _sgd(model)
    for x, y in _batches(world_size, per_rank):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.world_size(2)
@pytest.mark.parametrize("bucket_mb", [25.0, 0.0005])  # one bucket / many small buckets
@pytest.mark.parametrize("zero", ["algorithm", "optimizer"])
def test_gradient_allreduce_equals_sgd_on_concatenated_batch(bucket_mb: float, zero: str) -> None:
    per_rank = 6
    results = run_ranks(_gradient_rank, 2, per_rank, bucket_mb, zero)
    expected = _single_process(2, per_rank)
    fallbacks = {r[1] for r in results}
    assert fallbacks == ({0} if zero == "algorithm" else {STEPS})
    for rank_params, _ in results:
        for got, want in zip(rank_params, expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.world_size(4)
def test_gradient_allreduce_four_ranks() -> None:
    per_rank = 3
    results = run_ranks(_gradient_rank, 4, per_rank, 25.0)
    expected = _single_process(4, per_rank)
    for rank_params, fallbacks in results:
        assert fallbacks == 0
        for got, want in zip(rank_params, expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def _averaging_rank(ctx: DistContext) -> tuple[list[torch.Tensor], list[torch.Tensor], int]:
    torch.manual_seed(100 + ctx.rank)  # every rank starts from its own weights
    model = torch.nn.Sequential(torch.nn.Linear(7, 3), torch.nn.BatchNorm1d(3))
    model.train()
    model(torch.randn(4, 7))  # give BatchNorm rank-specific running stats
    before = [t.detach().clone() for t in AllReduce.state_tensors(model)]
    algo = AllReduce(scheme_config("allreduce", mode="weights", bucket_mb=0.0001), ctx)
    algo.after_step(model)
    after = [t.detach().clone() for t in AllReduce.state_tensors(model)]
    return before, after, algo.bytes_sent


@pytest.mark.world_size(2)
def test_model_averaging_equals_mean_of_rank_models() -> None:
    results = run_ranks(_averaging_rank, 2)
    befores = [r[0] for r in results]
    for _, after, sent in results:
        for i, got in enumerate(after):
            mean = torch.stack([b[i] for b in befores]).mean(0)
            torch.testing.assert_close(got, mean)
        assert sent == sum(t.numel() * t.element_size() for t in after)


def _world_one(ctx: DistContext) -> tuple[list[torch.Tensor], list[torch.Tensor], int]:
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    algo = AllReduce(scheme_config("allreduce", mode="gradients"), ctx)
    algo.setup(model)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    algo.reduce_gradients(model)
    after = [p.grad for p in model.parameters() if p.grad is not None]
    assert all(torch.equal(a, b) for a, b in zip(grads, after, strict=True))
    return before, [p.detach() for p in model.parameters()], algo.bytes_sent


def test_world_size_one_is_local_training() -> None:
    [(before, after, sent)] = run_ranks(_world_one, 1)
    assert sent == 0
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_buckets_respect_size_and_order() -> None:
    tensors = [torch.zeros(100), torch.zeros(100), torch.zeros(300), torch.zeros(10)]
    buckets = make_buckets(tensors, bucket_bytes=800)
    assert [len(b) for b in buckets] == [2, 1, 1]
    assert [t for b in buckets for t in b] == tensors
