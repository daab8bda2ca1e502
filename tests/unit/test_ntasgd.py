"""NT-ASGD's parts (task 3a): SGD that keeps an exact running mean of its weights after a switch,
and the non-monotone trigger on the validation loss."""

from __future__ import annotations

import pytest
import torch

from mlbench.schedules import AveragingSGD, NTASGDSchedule, Schedule


def _setup() -> tuple[torch.nn.Linear, AveragingSGD, torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    return model, AveragingSGD(model.parameters(), lr=0.1, weight_decay=0.01), torch.randn(8, 3)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def _step(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor) -> None:
    opt.zero_grad()
    model(x).pow(2).sum().backward()
    opt.step()


def test_it_is_plain_sgd_until_the_switch_then_keeps_the_exact_mean() -> None:
    model, opt, x = _setup()
    twin = torch.nn.Linear(3, 2)
    twin.load_state_dict(model.state_dict())
    sgd = torch.optim.SGD(twin.parameters(), lr=0.1, weight_decay=0.01)
    for _ in range(3):
        _step(model, opt, x)
        _step(twin, sgd, x)
    assert _same(model, twin)
    assert opt.averaged_steps == 0 and not opt.averaging
    opt.start_averaging()
    seen = []
    for lr in (0.1, 0.05, 0.2, 0.1):  # a per-step lr (3a's seq_len/70) is used when it applies
        for g, h in zip(opt.param_groups, sgd.param_groups, strict=True):
            g["lr"] = h["lr"] = lr
        _step(model, opt, x)
        _step(twin, sgd, x)
        seen.append([p.detach().clone() for p in twin.parameters()])
    assert _same(model, twin)
    assert opt.averaged_steps == 4
    means = [torch.stack(ws).mean(0) for ws in zip(*seen, strict=True)]
    trained = [p.detach().clone() for p in model.parameters()]
    with opt.swap_in_average():
        for p, mean in zip(model.parameters(), means, strict=True):
            assert torch.allclose(p, mean, atol=1e-7)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), trained, strict=True))


def test_the_average_survives_a_checkpoint() -> None:
    model, opt, x = _setup()
    opt.start_averaging()
    for _ in range(2):
        _step(model, opt, x)
    state = opt.state_dict()
    again = AveragingSGD(model.parameters(), lr=0.1)
    again.load_state_dict(state)
    assert again.averaging and again.averaged_steps == 2
    assert torch.equal(again.state[model.weight]["ax"], opt.state[model.weight]["ax"])


def _schedule(nonmono: int | None = 5, switch_at_eval: int | None = None) -> NTASGDSchedule:
    _, opt, _ = _setup()
    return NTASGDSchedule(opt, lr=0.3, nonmono=nonmono, switch_at_eval=switch_at_eval)


def test_the_schedule_protocol_and_a_constant_lr() -> None:
    s = _schedule()
    assert isinstance(s, Schedule)
    s.on_step(0)
    assert s.lr == pytest.approx(0.3)


def test_the_non_monotone_trigger() -> None:
    s = _schedule()
    for step, loss in enumerate([10.0, 9.0, 8.0, 7.0, 6.0]):
        s.on_eval(loss, step)
    assert s.switched_at is None
    assert not s.triggered(50.0)  # only 5 losses recorded: not more than nonmono
    s.on_eval(5.0, 5)
    # 6 recorded: compare with the best of all but the last 5, i.e. 10.0
    assert not s.triggered(9.5) and s.triggered(10.5)
    s.on_eval(9.5, 6)
    assert s.switched_at is None
    # now all but the last 5 are [10, 9]: 9.2 is above their best
    s.on_eval(9.2, 7)
    assert s.switched_at == 7
    assert isinstance(s.optimizer, AveragingSGD) and s.optimizer.averaging
    s.on_eval(100.0, 8)  # after the switch nothing changes
    assert s.switched_at == 7


def test_never_or_forced() -> None:
    never = _schedule(nonmono=None)
    for step, loss in enumerate([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]):
        never.on_eval(loss, step)
    assert never.switched_at is None
    forced = _schedule(switch_at_eval=2)
    forced.on_eval(1.0, 10)
    assert forced.switched_at is None
    forced.on_eval(0.5, 20)
    assert forced.switched_at == 20
    zero = _schedule(nonmono=0)  # compare with the best of all recorded losses
    zero.on_eval(1.0, 0)
    zero.on_eval(0.9, 1)
    assert zero.switched_at is None
    zero.on_eval(0.95, 2)
    assert zero.switched_at == 2
