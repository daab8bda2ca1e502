"""EF-signSGD and signSGD with majority vote, on real multi-process gloo groups.

Each spawned rank runs all the checks of one world size and returns what it saw (raw gradients,
the reduced result, its memory, its counters); references are computed here from every rank's
raw gradients.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from mlbench.algorithms.flat import flatten_grads, write_grads
from mlbench.algorithms.sign import SignSGD, pack_signs, signs, unpack_signs
from mlbench.dist import DistContext
from mlbench.errors import ConfigError
from mlbench.testing import run_ranks, scheme_config

D = 22  # parameters of _model(): not a multiple of 8 → 3 bytes of bits
NBYTES = 3
STEPS = 2


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))


def _params(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return list(model.parameters())


def _table(world: int, step: int) -> torch.Tensor:
    """Every rank's gradient at ``step`` (rows), with constructed ties for an even world.

    Columns 0-4: odd ranks hold the negation of the even rank before them (votes cancel);
    column 5: even ranks 0 (counts as +1), odd ranks -1 (a tie again); column 6: all zeros
    (every rank votes +1).
    """
    g = torch.Generator().manual_seed(2000 + step)
    t = torch.randn(world, D, generator=g)
    t[1::2, :5] = -t[0::2, :5]
    t[0::2, 5], t[1::2, 5] = 0.0, -1.0
    t[:, 6] = 0.0
    return t


def _sgd_step(model: torch.nn.Module, lr: float) -> None:
    """Plain SGD by hand (torch.optim's first step imports torch._dynamo: ~1.5 s per rank)."""
    with torch.no_grad():
        for p in model.parameters():
            p.sub_(p.grad, alpha=lr)


def _set(model: torch.nn.Module, flat: torch.Tensor) -> None:
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    write_grads(_params(model), flat)


def _run_steps(algo: SignSGD, ctx: DistContext) -> dict[str, list[Any]]:
    model = _model()
    rec: dict[str, list[Any]] = {"raw": [], "out": [], "mem": [], "bytes": []}
    for step in range(STEPS):
        _set(model, _table(ctx.world_size, step)[ctx.rank])
        rec["raw"].append(flatten_grads(_params(model)))
        before = algo.bytes_sent, algo.collectives
        algo.reduce_gradients(model)
        rec["bytes"].append((algo.bytes_sent - before[0], algo.collectives - before[1]))
        rec["out"].append(flatten_grads(_params(model)))
        rec["mem"].append(None if algo.memory is None else algo.memory.clone())
    return rec


def _train(ctx: DistContext, variant: str, lr: float) -> tuple[list[float], list[torch.Tensor]]:
    model = _model()
    if ctx.rank > 0:  # setup() must bring every rank to rank 0's weights
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.5)
    algo = SignSGD(scheme_config("signsgd", sign_variant=variant), ctx)
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
    return losses, [p.detach().clone() for p in model.parameters()]


def _sign_rank(ctx: DistContext) -> dict[str, Any]:
    def cfg(**kw: Any) -> Any:
        return scheme_config("signsgd", **kw)

    return {
        "majority": _run_steps(SignSGD(cfg(sign_variant="majority"), ctx), ctx),
        "ef": _run_steps(SignSGD(cfg(sign_variant="ef"), ctx), ctx),
        "ef_no_memory": _run_steps(SignSGD(cfg(sign_variant="ef", error_feedback=False), ctx), ctx),
        # training once (2 ranks) is enough
        "train_ef": _train(ctx, "ef", lr=0.2) if ctx.world_size == 2 else None,
        "train_majority": _train(ctx, "majority", lr=0.03) if ctx.world_size == 2 else None,
    }


@pytest.mark.parametrize(
    "world",
    [
        pytest.param(2, marks=pytest.mark.world_size(2)),
        pytest.param(4, marks=pytest.mark.world_size(4)),
    ],
)
def test_sign_schemes_match_reference(world: int) -> None:
    results = run_ranks(_sign_rank, world)

    # majority vote: sign of the sum of ±1 signs (sign(0) = +1); ties → 0
    for step in range(STEPS):
        raw = torch.stack([results[r]["majority"]["raw"][step] for r in range(world)])
        votes = torch.where(raw >= 0, 1.0, -1.0).sum(0)
        expected = torch.sign(votes)
        for r in range(world):
            rec = results[r]["majority"]
            assert torch.equal(rec["out"][step], expected)
            assert torch.equal(rec["out"][step][:6], torch.zeros(6))  # the constructed ties
            assert rec["out"][step][6] == 1.0  # all ranks 0 → all vote +1
            assert rec["bytes"][step] == (NBYTES, 1)
            assert rec["mem"][step] is None

    # EF-signSGD: p = g + e; c = (|p|_1 / d) sign(p); e = p - c; result = mean_r c_r
    for key, error_feedback in (("ef", True), ("ef_no_memory", False)):
        memory = [torch.zeros(D) for _ in range(world)]
        for step in range(STEPS):
            compressed = []
            for r in range(world):
                p = results[r][key]["raw"][step] + memory[r]
                scale = p.abs().sum() / D
                c = scale * torch.where(p >= 0, 1.0, -1.0)
                compressed.append(c)
                if error_feedback:
                    memory[r] = p - c
                    torch.testing.assert_close(results[r][key]["mem"][step], memory[r])
                else:
                    assert results[r][key]["mem"][step] is None
            expected = torch.stack(compressed).mean(0)
            for r in range(world):
                rec = results[r][key]
                torch.testing.assert_close(rec["out"][step], expected, rtol=1e-6, atol=1e-7)
                assert rec["bytes"][step] == (NBYTES + 4, 1)  # bits + one fp32 scale

    # training (2 ranks): loss goes down and replicas stay identical
    for key in ("train_ef", "train_majority") if world == 2 else ():
        _, ref_params = results[0][key]
        for r in range(world):
            losses, params = results[r][key]
            assert sum(losses[-5:]) < 0.5 * sum(losses[:5]), (key, losses)
            for a, b in zip(params, ref_params, strict=True):
                torch.testing.assert_close(a, b, rtol=0, atol=0)


def _world_one(ctx: DistContext) -> list[tuple[int, bool, dict[str, Any]]]:
    out = []
    for variant in ("ef", "majority"):
        algo = SignSGD(scheme_config("signsgd", sign_variant=variant), ctx)
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
    per_variant = _world_one(DistContext(0, 1, 0, "gloo", torch.device("cpu")))
    for sent, unchanged, stats in per_variant:
        assert sent == 0 and unchanged
        assert stats["compression_ratio"] == 1.0


@pytest.mark.parametrize("d", [1, 7, 8, 9, 22, 1001])
def test_packed_bits_round_trip(d: int) -> None:
    x = torch.randn(d, generator=torch.Generator().manual_seed(d))
    x[0] = 0.0
    packed = pack_signs(x)
    assert packed.dtype == torch.uint8 and packed.numel() == (d + 7) // 8
    assert np.array_equal(packed.numpy(), np.packbits((x >= 0).numpy()))  # MSB first, 0 padded
    assert torch.equal(unpack_signs(packed, d), signs(x))
    assert torch.equal(signs(x), torch.where(x >= 0, 1.0, -1.0))


def test_packed_bit_layout_and_sign_of_zero() -> None:
    x = torch.tensor([1.0, -1.0, 0.0, -2.0, 3.0, 3.0, -1.0, -1.0, -0.0])
    assert pack_signs(x).tolist() == [0b10101100, 0b10000000]  # 0 and -0.0 → bit 1 (+1)
    assert unpack_signs(pack_signs(x), 9).tolist() == [1, -1, 1, -1, 1, 1, -1, -1, 1]


def test_check_config_rejects_unknown_variant() -> None:
    SignSGD.check_config(scheme_config("signsgd", sign_variant="ef"), world_size=2)
    SignSGD.check_config(scheme_config("signsgd", sign_variant="majority"), world_size=2)
    with pytest.raises(ConfigError, match="sign_variant"):
        SignSGD.check_config(scheme_config("signsgd", sign_variant="bogus"), world_size=2)  # type: ignore[arg-type]
