"""Equivalence tests for allreduce variants, centralized Adam, DDP and local SGD (real gloo)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from mlbench.dist import DistContext
from mlbench.registry import get_algorithm
from mlbench.testing import run_ranks, scheme_config

STEPS = 4
PER_RANK = 4


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 5)
    )


def _data(world_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(7)
    n = world_size * PER_RANK
    return [
        (torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 5, (n,), generator=g))
        for _ in range(STEPS)
    ]


def _optimizer(kind: str, params: Any) -> torch.optim.Optimizer:
    if kind == "adam":
        return torch.optim.Adam(params, lr=1e-2)
    return torch.optim.SGD(params, lr=0.1, momentum=0.9)


def _train(ctx: DistContext, scheme: str, options: dict[str, Any], opt: str) -> dict[str, Any]:
    """Run STEPS steps of ``scheme`` on this rank's slice of the shared batches."""
    cfg = scheme_config(scheme, **options)
    algo = get_algorithm(scheme)(cfg, ctx)
    module = _model()
    model = algo.wrap(module)
    optimizer = algo.build_optimizer(module, _optimizer(opt, module.parameters()))
    algo.setup(model)
    setup_bytes = algo.bytes_sent
    history = []
    for x, y in _data(ctx.world_size):
        lo = ctx.rank * PER_RANK
        loss = torch.nn.functional.cross_entropy(
            model(x[lo : lo + PER_RANK]), y[lo : lo + PER_RANK]
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        exposed = algo.exposed_in_backward()
        algo.reduce_gradients(model)
        optimizer.step()
        algo.after_step(model)
        history.append([p.detach().clone() for p in module.parameters()])
    return {
        "params": history[-1],
        "history": history,
        "bytes": algo.bytes_sent - setup_bytes,
        "exposed": exposed,
        "dense": algo.dense_bytes_per_step,
        "type": type(optimizer),
    }


def _single(world_size: int, opt: str) -> list[torch.Tensor]:
    model = _model()
    optimizer = _optimizer(opt, model.parameters())
    for x, y in _data(world_size):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()]


def _assert_all_close(results: list[dict[str, Any]], expected: list[torch.Tensor]) -> None:
    for r in results:
        for got, want in zip(r["params"], expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def _variants(ctx: DistContext) -> dict[str, dict[str, Any]]:
    return {
        "bucketed": _train(ctx, "allreduce", {}, "sgd"),
        "per_layer": _train(ctx, "allreduce", {"per_layer": True}, "sgd"),
        "overlap": _train(ctx, "allreduce", {"overlap": True}, "sgd"),
        "ddp": _train(ctx, "ddp", {"bucket_mb": 0.001}, "sgd"),
        "adam": _train(ctx, "adam", {"adam_lr": 1e-2}, "sgd"),
    }


@pytest.mark.world_size(2)
def test_gradient_schemes_equal_sgd_on_the_concatenated_batch() -> None:
    results = run_ranks(_variants, 2)
    sgd, adam = _single(2, "sgd"), _single(2, "adam")
    for name in ("bucketed", "per_layer", "overlap", "ddp"):
        _assert_all_close([r[name] for r in results], sgd)
    # centralized Adam == single-process Adam on the concatenated batch (optimizer replaced)
    _assert_all_close([r["adam"] for r in results], adam)
    assert all(r["adam"]["type"] is torch.optim.Adam for r in results)
    dense = results[0]["bucketed"]["dense"]
    for name in ("bucketed", "per_layer", "overlap", "ddp"):
        # every scheme sends the whole gradient once per step
        assert results[0][name]["bytes"] == STEPS * dense, name
    assert results[0]["ddp"]["exposed"] >= 0.0


def _local(ctx: DistContext) -> dict[str, Any]:
    return {
        "h1": _train(ctx, "localsgd", {"local_steps": 1}, "sgd"),
        "h1_avg": _train(ctx, "allreduce", {"mode": "weights"}, "sgd"),
        "h3": _train(ctx, "localsgd", {"local_steps": 3}, "sgd"),
    }


@pytest.mark.world_size(2)
def test_local_sgd() -> None:
    r0, r1 = run_ranks(_local, 2)
    # H = 1 is model averaging after every local step
    for a, b in zip(r0["h1"]["params"], r0["h1_avg"]["params"], strict=True):
        torch.testing.assert_close(a, b)
    # H = 3: ranks drift apart during local steps and agree right after the 3rd
    h0, h1 = r0["h3"]["history"], r1["h3"]["history"]
    assert not all(torch.equal(a, b) for a, b in zip(h0[0], h1[0], strict=True))
    assert all(torch.allclose(a, b) for a, b in zip(h0[2], h1[2], strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(h0[3], h1[3], strict=True))
    dense = r0["h3"]["dense"]
    assert r0["h3"]["bytes"] == dense  # one average in 4 steps (no buffers in this model)


def _powersgd_hook(ctx: DistContext) -> dict[str, Any]:
    return _train(ctx, "ddp", {"ddp_hook": "powersgd", "matrix_rank": 1, "start_iter": 2}, "sgd")


@pytest.mark.world_size(2)
def test_ddp_with_torch_powersgd_hook_compresses() -> None:
    r0, r1 = run_ranks(_powersgd_hook, 2)
    for a, b in zip(r0["params"], r1["params"], strict=True):
        torch.testing.assert_close(a, b)  # the hook's update is identical on all ranks
    # step 1 is a plain all-reduce; steps 2.. are compressed, so fewer bytes than dense
    assert r0["dense"] < r0["bytes"] < STEPS * r0["dense"]


def _world_one(ctx: DistContext) -> dict[str, int]:
    return {name: _train(ctx, name, {}, "sgd")["bytes"] for name in ("ddp", "localsgd", "adam")}


def test_world_size_one_sends_nothing() -> None:
    [sent] = run_ranks(_world_one, 1)
    assert sent == {"ddp": 0, "localsgd": 0, "adam": 0}
