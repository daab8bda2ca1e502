"""Mixed precision: loss scaling, overflow skipping, autocast (single process, world size 1)."""

from __future__ import annotations

import pytest
import torch

from mlbench.dist import DistContext
from mlbench.train.precision import Precision

CPU = torch.device("cpu")
SOLO = DistContext(rank=0, world_size=1, local_rank=0, backend="gloo", device=CPU)


def _grads(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_fp16_scaled_backward_unscales_to_the_fp32_gradient() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    x = torch.randn(8, 4)
    model(x).pow(2).mean().backward()
    reference = _grads(model)
    model.zero_grad()
    prec = Precision("fp16", CPU, SOLO, init_scale=1024.0)
    prec.backward(model(x).pow(2).mean())
    assert _grads(model)[0].abs().sum() > 100 * reference[0].abs().sum()  # really scaled
    assert prec.unscale_and_check(model) is False
    for got, want in zip(_grads(model), reference, strict=True):
        torch.testing.assert_close(got, want)


def test_overflow_is_skipped_counted_and_halves_the_scale() -> None:
    model = torch.nn.Linear(2, 1)
    prec = Precision("fp16", CPU, SOLO, init_scale=2.0**10, window=3, max_scale=2.0**11)
    model(torch.ones(1, 2)).sum().backward()
    model.weight.grad[0, 0] = float("inf")
    assert prec.unscale_and_check(model) is True
    prec.update(skipped=True)
    assert prec.skipped_steps == 1 and prec.scale == 2.0**9
    for _ in range(3):
        prec.update(skipped=False)
    assert prec.scale == 2.0**10  # window clean steps double it
    for _ in range(9):
        prec.update(skipped=False)
    assert prec.scale == 2.0**11  # capped at max_scale


@pytest.mark.parametrize(("mode", "dtype"), [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_autocast_runs_matmuls_in_low_precision(mode: str, dtype: torch.dtype) -> None:
    model = torch.nn.Linear(4, 3)
    with Precision(mode, CPU, SOLO).autocast():
        out = model(torch.randn(2, 4))
    assert out.dtype == dtype
    assert model.weight.dtype == torch.float32  # master weights stay fp32


def test_fp32_is_untouched() -> None:
    prec = Precision("fp32", CPU, SOLO)
    model = torch.nn.Linear(2, 1)
    with prec.autocast():
        out = model(torch.ones(1, 2))
    assert out.dtype == torch.float32 and prec.scale == 1.0
    prec.backward(out.sum())
    assert prec.unscale_and_check(model) is False


def test_unknown_mode() -> None:
    with pytest.raises(ValueError, match="precision"):
        Precision("fp8", CPU, SOLO)
