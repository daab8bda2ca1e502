"""mlbench.schedules: lr scaling, warm-up and reduce-on-plateau."""

from __future__ import annotations

import math

import pytest
import torch

from mlbench.registry import get_task
from mlbench.schedules import LRSchedule, scaled_lr, warmup_epochs
from mlbench.tasks.common import build_sgd, build_sgd_schedule


@pytest.mark.parametrize(
    ("k", "cap", "expected"),
    [(1, None, 0.1), (4, None, 0.4), (32, None, 3.2), (32, 16, 1.6), (8, 16, 0.8), (16, 16, 1.6)],
)
def test_linear_scaling(k, cap, expected):
    assert scaled_lr(0.1, k, "linear", cap) == pytest.approx(expected)


def test_linear_scaling_cap_16_for_32_workers():
    assert scaled_lr(4.0, 32, "linear", 16) == pytest.approx(64.0)


@pytest.mark.parametrize(("k", "cap", "expected"), [(4, None, 0.2), (16, 4, 0.2), (9, None, 0.3)])
def test_sqrt_scaling(k, cap, expected):
    assert scaled_lr(0.1, k, "sqrt", cap) == pytest.approx(expected)


def test_no_scaling_and_unknown_rule():
    assert scaled_lr(0.3, 64, "none", None) == 0.3
    with pytest.raises(ValueError, match="cube"):
        scaled_lr(0.3, 4, "cube", None)


@pytest.mark.parametrize(
    ("k", "expected"), [(1, 0.0), (2, 1.0), (4, 2.0), (8, 3.0), (6, math.log2(6))]
)
def test_warmup_log2k(k, expected):
    assert warmup_epochs("log2k", 99.0, k) == pytest.approx(expected)


def test_warmup_other_rules():
    assert warmup_epochs("none", 5.0, 8) == 0.0
    assert warmup_epochs("epochs", 2.5, 8) == 2.5
    with pytest.raises(ValueError, match="sqrt"):
        warmup_epochs("sqrt", 1.0, 8)


def _opt(lr: float = 123.0) -> torch.optim.Optimizer:
    p = torch.nn.Parameter(torch.zeros(2))
    q = torch.nn.Parameter(torch.zeros(3))
    return torch.optim.SGD([{"params": [p]}, {"params": [q]}], lr=lr)


def _sched(opt, **kw):
    args = dict(
        start_lr=0.1,
        peak_lr=0.5,
        warmup_steps=4,
        plateau=True,
        factor=0.5,
        patience=1,
        threshold=0.01,
        min_lr=0.2,
    )
    args.update(kw)
    return LRSchedule(opt, **args)


def _lrs(opt):
    return [g["lr"] for g in opt.param_groups]


def test_warmup_linear_per_step_from_start_to_peak():
    opt = _opt()
    s = _sched(opt)
    assert s.lr == pytest.approx(0.1)  # set at construction, overriding the optimizer's lr
    seen = []
    for step in range(7):
        s.on_step(step)
        seen.append(s.lr)
        assert _lrs(opt) == [s.lr, s.lr]  # every param group follows
    assert seen == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.5, 0.5])


def test_no_warmup_starts_at_peak():
    opt = _opt()
    s = _sched(opt, warmup_steps=0)
    assert s.lr == pytest.approx(0.5)
    s.on_step(0)
    assert s.lr == pytest.approx(0.5)


def test_plateau_reduces_after_patience_with_absolute_threshold():
    opt = _opt()
    s = _sched(opt, warmup_steps=0, peak_lr=1.0, factor=0.5, patience=1, threshold=0.01, min_lr=0)
    s.on_eval(1.0, 10)  # best = 1.0
    assert s.lr == 1.0
    s.on_eval(0.995, 11)  # improvement < 0.01 absolute: bad eval 1 (≤ patience)
    assert s.lr == 1.0
    s.on_eval(0.995, 12)  # bad eval 2 > patience: reduce
    assert s.lr == pytest.approx(0.5)
    s.on_eval(0.98, 13)  # 1.0 - 0.98 > 0.01: real improvement, counter reset
    s.on_eval(0.975, 14)  # bad 1
    assert s.lr == pytest.approx(0.5)
    s.on_eval(0.971, 15)  # bad 2: reduce
    assert s.lr == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("best", "new", "reduced"),
    [
        # 10 -> 9.95 improves by 0.05 > 0.01 absolute (a 1 % relative threshold would say no)
        (10.0, 9.95, False),
        # 0.1 -> 0.095 improves by 0.005 < 0.01 absolute (a 1 % relative threshold would say yes)
        (0.1, 0.095, True),
    ],
)
def test_plateau_threshold_is_absolute(best, new, reduced):
    opt = _opt()
    s = _sched(opt, warmup_steps=0, peak_lr=1.0, patience=0, threshold=0.01, min_lr=0)
    s.on_eval(best, 1)
    s.on_eval(new, 2)
    assert s.lr == pytest.approx(0.5 if reduced else 1.0)


def test_plateau_respects_min_lr():
    opt = _opt()
    s = _sched(opt, warmup_steps=0, peak_lr=1.0, factor=0.5, patience=0, min_lr=0.3)
    lrs = []
    for i in range(6):
        s.on_eval(1.0, i)
        lrs.append(s.lr)
    assert lrs == pytest.approx([1.0, 0.5, 0.3, 0.3, 0.3, 0.3])


def test_plateau_not_stepped_during_warmup():
    opt = _opt()
    s = _sched(opt, warmup_steps=10, start_lr=0.1, peak_lr=1.0, patience=0, min_lr=0)
    for step in range(10):
        s.on_step(step)
        s.on_eval(1.0 + step, step)  # getting worse every eval: would reduce if counted
    assert s.lr == pytest.approx(0.1 + 0.9 * 9 / 10)
    s.on_step(10)
    assert s.lr == pytest.approx(1.0)
    s.on_eval(50.0, 10)  # first eval that counts: sets the best, no reduction
    assert s.lr == pytest.approx(1.0)
    s.on_eval(50.0, 11)
    assert s.lr == pytest.approx(0.5)


def test_no_plateau_means_constant_after_warmup():
    opt = _opt()
    s = _sched(opt, warmup_steps=0, plateau=False)
    for i in range(5):
        s.on_eval(1.0 + i, i)
    assert s.lr == pytest.approx(0.5)


@pytest.mark.parametrize(("k", "warm_steps", "peak"), [(1, 0, 0.02), (4, 20, 0.08), (8, 30, 0.16)])
def test_cifar_reference_schedule(k, warm_steps, peak):
    cfg = get_task("cifar10-resnet20").default_config()
    model = torch.nn.Linear(3, 2)
    opt = build_sgd(cfg.optim, model, k)
    assert opt.param_groups[0]["lr"] == pytest.approx(peak)
    assert opt.param_groups[0]["momentum"] == 0.9
    assert opt.param_groups[0]["weight_decay"] == 1e-4
    s = build_sgd_schedule(cfg.optim, opt, k, steps_per_epoch=10)
    assert s.warmup_steps == warm_steps  # log2(k) epochs of 10 steps
    assert s.lr == pytest.approx(0.02 if warm_steps else peak)
    s.on_step(warm_steps)
    assert s.lr == pytest.approx(peak)


def test_epsilon_reference_lr_cap():
    cfg = get_task("epsilon-logreg").default_config()
    opt = build_sgd(cfg.optim, torch.nn.Linear(3, 1, bias=False), 32)
    assert opt.param_groups[0]["lr"] == pytest.approx(4.0 * 16)
    s = build_sgd_schedule(cfg.optim, opt, 32, steps_per_epoch=7)
    assert s.warmup_steps == 0
    # min_lr = 4 (the base lr): the plateau schedule never goes below it
    for i in range(20):
        s.on_eval(1.0, i)
    assert s.lr == pytest.approx(4.0)


def test_fractional_warmup_steps_round_up():
    cfg = get_task("cifar10-resnet20").default_config()
    opt = build_sgd(cfg.optim, torch.nn.Linear(3, 2), 3)
    s = build_sgd_schedule(cfg.optim, opt, 3, steps_per_epoch=10)
    assert s.warmup_steps == math.ceil(math.log2(3) * 10) == 16


def _sgd() -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)


def test_gnmt_schedule_exponential_warmup_then_four_halvings() -> None:
    """4a (MLPerf GNMT): 0.01·lr at step 0 rising geometrically to lr at 200; ×0.5 at 40 % of
    the plan and every 5 % after, four times at most."""
    from mlbench.schedules import WarmupStepDecay

    plan = 1000
    opt = _sgd()
    s = WarmupStepDecay(
        opt,
        lr=2e-3,
        warmup_steps=200,
        warmup_start=0.01,
        decay_start=int(0.4 * plan),
        decay_interval=int(0.05 * plan),
        decay_steps=4,
        factor=0.5,
    )
    assert s.lr == pytest.approx(2e-5)  # set at construction: the first update's lr
    assert s.lr_at(100) == pytest.approx(2e-3 * 0.1)  # halfway in log space: √0.01
    assert s.lr_at(200) == pytest.approx(2e-3)
    assert s.lr_at(399) == pytest.approx(2e-3)
    expected = {400: 1e-3, 449: 1e-3, 450: 5e-4, 500: 2.5e-4, 550: 1.25e-4, 600: 1.25e-4}
    for step, lr in expected.items():
        s.on_step(step)
        assert s.lr == pytest.approx(lr), step
    # geometric warm-up: a constant ratio between consecutive steps
    ratios = {round(s.lr_at(i + 1) / s.lr_at(i), 12) for i in range(199)}
    assert len(ratios) == 1


def test_inverse_sqrt_linear_warmup_then_decay() -> None:
    from mlbench.schedules import InverseSqrt

    opt = _sgd()
    s = InverseSqrt(opt, lr=1.976e-3, warmup_steps=1000)
    assert s.lr == pytest.approx(1.976e-3 / 1000)  # the first update: not a wasted lr of 0
    assert s.lr_at(499) == pytest.approx(1.976e-3 * 0.5)
    assert s.lr_at(999) == pytest.approx(1.976e-3)  # the 1000th update: the peak
    assert s.lr_at(3999) == pytest.approx(1.976e-3 * 0.5)  # √(1000/4000)
    s.on_step(3999)
    assert opt.param_groups[0]["lr"] == pytest.approx(1.976e-3 * 0.5)


def test_linear_warmup_shape() -> None:
    from mlbench.schedules import linear_warmup

    assert linear_warmup(0, 4, 0.1, 0.5) == pytest.approx(0.1)
    assert linear_warmup(2, 4, 0.1, 0.5) == pytest.approx(0.3)
    assert linear_warmup(4, 4, 0.1, 0.5) == pytest.approx(0.5)
    assert linear_warmup(9, 4, 0.1, 0.5) == pytest.approx(0.5)
    assert linear_warmup(0, 0, 0.1, 0.5) == pytest.approx(0.5)  # no warm-up: the peak


def test_warmup_multistep_warmup_then_tenfold_drops() -> None:
    """1b's shape: linear from start to peak over the warm-up, ×0.1 at each milestone."""
    from mlbench.schedules import WarmupMultiStep

    opt = _opt()
    s = WarmupMultiStep(
        opt, start_lr=0.1, peak_lr=0.5, warmup_steps=4, milestones=[30, 10, 20], factor=0.1
    )
    assert _lrs(opt) == pytest.approx([0.1, 0.1])  # set at construction, in every group
    expected = {1: 0.2, 3: 0.4, 4: 0.5, 9: 0.5, 10: 0.05, 19: 0.05, 20: 0.005, 30: 0.0005}
    for step, lr in expected.items():
        s.on_step(step)
        assert _lrs(opt) == pytest.approx([lr, lr]), step
    s.on_eval(123.0, 31)  # evaluations change nothing
    assert s.lr == pytest.approx(0.0005)
    assert s.counts_applied_steps  # an fp16 overflow step does not advance it


def test_warmup_multistep_milestone_inside_the_warmup_counts_after_it() -> None:
    from mlbench.schedules import WarmupMultiStep

    s = WarmupMultiStep(
        _sgd(), start_lr=0.0, peak_lr=1.0, warmup_steps=10, milestones=[5], factor=0.5
    )
    assert s.lr_at(5) == pytest.approx(0.5)  # still warming up
    assert s.lr_at(10) == pytest.approx(0.5)  # peak × 0.5: the milestone is behind


@pytest.mark.parametrize(
    ("k", "batch", "start", "peak"),
    [
        # Goyal et al.: 0.1 per 256 images; warm-up from 0.1 to the scaled lr
        (16, 256, 0.1, 1.6),
        (1, 256, 0.1, 0.1),
        # a CPU's auto batch of 32 on 2 workers: 0.025, below 0.1, nothing to warm up to
        (2, 0, 0.025, 0.025),
    ],
)
def test_imagenet_reference_schedule(k: int, batch: int, start: float, peak: float) -> None:
    task = get_task("imagenet-resnet50")
    cfg = task.default_config()
    cfg.data.batch_size = batch
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    opt = task.build_optimizer(cfg, model, k)
    steps = 100  # per epoch
    s = task.build_schedule(cfg, opt, k, steps_per_epoch=steps)
    assert s.lr == pytest.approx(start)
    expected = {
        250: start + 0.5 * (peak - start),  # halfway through the 5-epoch warm-up
        500: peak,
        2999: peak,
        3000: peak * 0.1,  # epoch 30
        6000: peak * 0.01,  # epoch 60
        7999: peak * 0.01,
        8000: peak * 0.001,  # epoch 80
        8999: peak * 0.001,  # the last step of epoch 90
    }
    for step, lr in expected.items():
        s.on_step(step)
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([lr, lr]), step
