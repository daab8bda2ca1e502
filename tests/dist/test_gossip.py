"""Gossip (D-PSGD) on real multi-process gloo groups.

Each spawn costs seconds, so one 4-rank spawn runs every 4-rank check and the tests below read
its (module-cached) results; expectations are computed here, in the test process, from the
per-rank states the ranks return.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch

from mlbench.algorithms.allreduce import AllReduce
from mlbench.algorithms.gossip import Gossip
from mlbench.algorithms.topology import spectral_gap
from mlbench.dist import DistContext
from mlbench.errors import ConfigError
from mlbench.testing import run_ranks, scheme_config

# Path graph 0-1-2-3 with Metropolis–Hastings weights: irregular degrees (1, 2, 2, 1).
PATH4 = [
    [2 / 3, 1 / 3, 0.0, 0.0],
    [1 / 3, 1 / 3, 1 / 3, 0.0],
    [0.0, 1 / 3, 1 / 3, 1 / 3],
    [0.0, 0.0, 1 / 3, 2 / 3],
]
RING4 = [[1 / 3 if (i - j) % 4 in (0, 1, 3) else 0.0 for j in range(4)] for i in range(4)]
COMPLETE4 = [[0.25] * 4 for _ in range(4)]
# 2 x 2 torus, row-major: rank (r, c) = 2r + c; neighbours (1 - r, c) and (r, 1 - c) — a 4-cycle
TORUS4 = [[1 / 3 if i == j or (i ^ j) in (1, 2) else 0.0 for j in range(4)] for i in range(4)]
EXPECTED_W4 = {
    "ring": RING4,
    "torus": TORUS4,
    "exponential": COMPLETE4,  # distances 1, 2 (and -1 ≡ 3): everyone
    "complete": COMPLETE4,
    "custom": PATH4,
}
CONSENSUS_STEPS = 40


def _cfg(topology: Any, custom: str | None = None) -> Any:
    return scheme_config("gossip", topology=topology, mixing_matrix=custom)


def _model(rank: int, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """A small model with rank-specific parameters and BatchNorm running stats."""
    torch.manual_seed(100 + rank)
    model = torch.nn.Sequential(torch.nn.Linear(7, 3), torch.nn.BatchNorm1d(3))
    model.train()
    model(torch.randn(4, 7))
    return model.to(dtype)


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1).double() for t in AllReduce.state_tensors(model)])


def _nbytes(model: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in AllReduce.state_tensors(model))


def _sgd_step(model: torch.nn.Module, lr: float = 0.1) -> None:
    """A plain SGD step (the first torch.optim optimizer costs seconds per spawned process)."""
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p.sub_(p.grad, alpha=lr)


def _one_step(ctx: DistContext, topology: str, custom: str | None) -> dict[str, Any]:
    model = _model(ctx.rank)
    algo = Gossip(_cfg(topology, custom), ctx)
    before = _flat(model)
    algo.after_step(model)
    return {
        "before": before,
        "after": _flat(model),
        "bytes_sent": algo.bytes_sent,
        "collectives": algo.collectives,
        "nbytes": _nbytes(model),
        "stats": algo.stats(),
    }


def _train_step(ctx: DistContext) -> dict[str, Any]:
    """Ring D-PSGD step with real gradients: setup broadcast, local SGD step, then mixing."""
    model = _model(ctx.rank)
    init0 = _flat(_model(0))
    algo = Gossip(_cfg("ring"), ctx)
    algo.setup(model)
    after_setup = _flat(model)
    g = torch.Generator().manual_seed(7 + ctx.rank)  # every rank has its own data
    x, y = torch.randn(5, 7, generator=g), torch.randint(0, 3, (5,), generator=g)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    algo.reduce_gradients(model)
    after = [p.grad for p in model.parameters() if p.grad is not None]
    untouched = all(torch.equal(a, b) for a, b in zip(grads, after, strict=True))
    _sgd_step(model)
    pre_mix = _flat(model)
    algo.after_step(model)
    return {
        "init0": init0,
        "after_setup": after_setup,
        "grads_untouched": untouched,
        "pre_mix": pre_mix,
        "post_mix": _flat(model),
    }


def _consensus(ctx: DistContext, topology: str, custom: str | None) -> list[torch.Tensor]:
    """Repeated gossip without gradients (float64 so tiny deviations stay measurable)."""
    model = _model(ctx.rank, torch.float64)
    algo = Gossip(_cfg(topology, custom), ctx)
    states = [_flat(model)]
    for _ in range(CONSENSUS_STEPS):
        algo.after_step(model)
        states.append(_flat(model))
    return states


def _four_ranks(ctx: DistContext, custom: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        top: _one_step(ctx, top, custom if top == "custom" else None) for top in EXPECTED_W4
    }
    averaged = _model(ctx.rank)
    AllReduce(scheme_config("allreduce", mode="weights"), ctx).after_step(averaged)
    out["allreduce"] = _flat(averaged)
    out["train"] = _train_step(ctx)
    out["consensus"] = {
        "ring": _consensus(ctx, "ring", None),
        "custom": _consensus(ctx, "custom", custom),
    }
    return out


def _two_ranks(ctx: DistContext) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for top in ("complete", "ring"):
        model = _model(ctx.rank)
        algo = Gossip(_cfg(top), ctx)
        algo.after_step(model)
        out[top] = (_flat(model), algo.bytes_sent, algo.stats())
    averaged = _model(ctx.rank)
    AllReduce(scheme_config("allreduce", mode="weights"), ctx).after_step(averaged)
    out["allreduce"] = _flat(averaged)
    # mixed dtypes: one flat buffer (one message per neighbour) per dtype
    torch.manual_seed(5 + ctx.rank)
    mixed = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 2).double())
    before = [p.detach().clone() for p in mixed.parameters()]
    algo = Gossip(_cfg("complete"), ctx)
    algo.after_step(mixed)
    out["mixed"] = (
        before,
        [p.detach().clone() for p in mixed.parameters()],
        algo.bytes_sent,
        algo.collectives,
        _nbytes(mixed),
    )
    return out


def _world_one(ctx: DistContext, custom: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for top in ("ring", "exponential", "complete", "custom"):
        model, reference = _model(0), _model(0)
        algo = Gossip(_cfg(top, custom if top == "custom" else None), ctx)
        algo.setup(model)
        x = torch.randn(6, 7, generator=torch.Generator().manual_seed(3))
        for m in (model, reference):
            m(x).sum().backward()
            if m is model:
                algo.reduce_gradients(m)
            _sgd_step(m)
            if m is model:
                algo.after_step(m)
        out[top] = (_flat(model), _flat(reference), algo.bytes_sent, algo.stats())
    return out


@pytest.fixture(scope="module")
def four() -> dict[str, Any]:
    return _collect(run_ranks(_four_ranks, 4, json.dumps(PATH4)))


def _collect(per_rank: list[dict[str, Any]]) -> dict[str, Any]:
    """Turn the per-rank dicts into one dict of per-rank lists."""
    return {key: [r[key] for r in per_rank] for key in per_rank[0]}


def _mixed(w: list[list[float]], vectors: list[torch.Tensor]) -> torch.Tensor:
    return torch.tensor(w, dtype=torch.float64) @ torch.stack(vectors)


# ------------------------------------------------------------------ 4 ranks
@pytest.mark.world_size(4)
def test_complete_graph_equals_allreduce_model_averaging_four_ranks(four: dict[str, Any]) -> None:
    for got, want in zip((r["after"] for r in four["complete"]), four["allreduce"], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    mean = torch.stack([r["before"] for r in four["complete"]]).mean(0)
    for r in four["complete"]:
        torch.testing.assert_close(r["after"], mean, rtol=1e-6, atol=1e-6)


@pytest.mark.world_size(4)
@pytest.mark.parametrize("topology", ["ring", "torus", "exponential", "custom"])
def test_one_step_equals_mixing_of_initial_states(four: dict[str, Any], topology: str) -> None:
    ranks = four[topology]
    expected = _mixed(EXPECTED_W4[topology], [r["before"] for r in ranks])
    for rank, r in enumerate(ranks):
        torch.testing.assert_close(r["after"], expected[rank], rtol=1e-6, atol=1e-6)
        assert r["stats"]["topology"] == topology


@pytest.mark.world_size(4)
@pytest.mark.parametrize("topology", list(EXPECTED_W4))
def test_bytes_sent_is_degree_times_flat_state(four: dict[str, Any], topology: str) -> None:
    for rank, r in enumerate(four[topology]):
        degree = sum(1 for j, w in enumerate(EXPECTED_W4[topology][rank]) if j != rank and w > 0)
        assert r["stats"]["degree"] == degree
        assert r["bytes_sent"] == degree * r["nbytes"]
        assert r["collectives"] == degree  # one message per neighbour
        assert r["stats"]["spectral_gap"] == pytest.approx(
            spectral_gap(np.array(EXPECTED_W4[topology]))
        )


@pytest.mark.world_size(4)
def test_training_step_is_local_sgd_then_mixing(four: dict[str, Any]) -> None:
    train = four["train"]
    for r in train:  # setup: everyone starts from rank 0's model
        torch.testing.assert_close(r["after_setup"], r["init0"], rtol=0, atol=0)
        assert r["grads_untouched"]
    pre = [r["pre_mix"] for r in train]
    assert not torch.allclose(pre[0], pre[1])  # local steps on different data diverge
    expected = _mixed(RING4, pre)
    for rank, r in enumerate(train):
        torch.testing.assert_close(r["post_mix"], expected[rank], rtol=1e-6, atol=1e-6)


@pytest.mark.world_size(4)
@pytest.mark.parametrize("topology", ["ring", "custom"])
def test_repeated_gossip_reaches_consensus_at_spectral_gap_rate(
    four: dict[str, Any], topology: str
) -> None:
    per_rank = [r[topology] for r in four["consensus"]]
    states = [torch.stack([steps[t] for steps in per_rank]) for t in range(CONSENSUS_STEPS + 1)]
    mean = states[0].mean(0)
    dev = []
    for x in states:
        torch.testing.assert_close(x.mean(0), mean, rtol=0, atol=1e-12)  # the mean is preserved
        dev.append(float((x - mean).norm()))
    rho = 1 - spectral_gap(np.array(EXPECTED_W4[topology]))
    assert dev[0] > 0.1
    for t in range(1, CONSENSUS_STEPS + 1):
        assert dev[t] <= dev[t - 1] * rho * (1 + 1e-9) + 1e-13  # contraction bound
    assert dev[-1] < 1e-3 * dev[0]  # consensus on the mean
    if topology == "ring":
        # ring of 4, weights 1/3: every non-top eigenvalue has |λ| = 1/3 = 1 - gap, so the
        # spread shrinks by exactly that factor at every step
        assert rho == pytest.approx(1 / 3)
        for t in range(1, 10):
            assert dev[t] / dev[t - 1] == pytest.approx(rho, rel=1e-9)
    else:
        # asymptotically the second eigenvalue dominates: the rate tends to 1 - gap
        assert dev[-1] / dev[-2] == pytest.approx(rho, rel=1e-3)


# ------------------------------------------------------------------ 2 and 1 ranks
@pytest.mark.world_size(2)
def test_two_ranks_complete_and_ring_equal_allreduce_averaging() -> None:
    out = _collect(run_ranks(_two_ranks, 2))
    for top in ("complete", "ring"):  # the ring of 2 is the complete graph
        for (got, sent, stats), want in zip(out[top], out["allreduce"], strict=True):
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
            assert stats["degree"] == 1
            assert stats["spectral_gap"] == pytest.approx(1.0)
            assert sent == got.numel() * 4
    (b0, a0, sent0, coll0, nbytes0), (b1, a1, *_) = out["mixed"]
    for x, y, got0, got1 in zip(b0, b1, a0, a1, strict=True):
        torch.testing.assert_close(got0, (x + y) / 2)
        torch.testing.assert_close(got1, (x + y) / 2)
    assert {t.dtype for t in a0} == {torch.float32, torch.float64}
    assert sent0 == nbytes0  # one neighbour
    assert coll0 == 2  # one message per dtype


def test_world_size_one_is_local_training_and_sends_nothing() -> None:
    [out] = run_ranks(_world_one, 1, "[[1.0]]")
    for top, (got, want, sent, stats) in out.items():
        assert sent == 0, top
        assert stats["degree"] == 0
        assert stats["spectral_gap"] == 1.0
        torch.testing.assert_close(got, want, rtol=0, atol=0)


# ------------------------------------------------------------------ config checks (no spawn)
@pytest.mark.parametrize(
    ("topology", "world", "custom", "match"),
    [
        ("torus", 5, None, "torus"),
        ("torus", 2, None, "torus"),
        ("custom", 2, None, "needs mixing_matrix"),
        ("custom", 3, json.dumps(PATH4), "4 x 4 but the world size is 3"),
        ("ring", 4, json.dumps(PATH4), "set topology = custom"),
        ("star", 4, None, "unknown topology"),
    ],
)
def test_check_config_rejects_before_start(
    topology: str, world: int, custom: str | None, match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        Gossip.check_config(_cfg(topology, custom), world)


def test_check_config_accepts_valid_combinations() -> None:
    for topology, world in [("ring", 1), ("ring", 7), ("torus", 6), ("exponential", 9)]:
        Gossip.check_config(_cfg(topology), world)
    Gossip.check_config(_cfg("custom", json.dumps(PATH4)), 4)
