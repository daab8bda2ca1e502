"""Task 3a (wikitext2-lstm) on one process: the spec's hyperparameters, the carried and reset
hidden state, the per-step lr factor, and validation on the real WikiText-2 files."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from mlbench.data.bptt import Window
from mlbench.dist import DistContext
from mlbench.errors import ConfigError, DataError
from mlbench.runs import resolve_config
from mlbench.schedules import AveragingSGD, NTASGDSchedule
from mlbench.tasks.wikitext2_lstm import WikiText2Config, WikiText2LSTM

ONE = DistContext(rank=0, world_size=1, local_rank=0, backend="gloo", device=torch.device("cpu"))
TINY = [
    "model.embedding_size=8",
    "model.hidden_size=8",
    "data.batch_size=4",
    "data.train_samples=5000",
    "data.val_samples=3000",
]


def tiny(data_dir: Path, *extra: str) -> tuple[WikiText2LSTM, WikiText2Config]:
    task, cfg = resolve_config("wikitext2-lstm", overrides=[f"data.dir={data_dir}", *TINY, *extra])
    assert isinstance(task, WikiText2LSTM) and isinstance(cfg, WikiText2Config)
    return task, cfg


def test_the_spec_holds_the_reference_hyperparameters() -> None:
    task = WikiText2LSTM()
    cfg = task.default_config()
    assert isinstance(cfg, WikiText2Config)
    assert (task.task_id, task.unit) == ("3a", "tokens")
    assert (task.target.metric, task.target.value, task.target.light_value) == (
        "perplexity",
        70.0,
        90.0,
    )
    assert task.target.mode == "min" and task.target.reached(69.9, "full")
    assert cfg.seed == 43 and cfg.train.max_epochs == 750 and cfg.train.clip_grad_norm == 0.25
    d, m, o = cfg.data, cfg.model, cfg.optim
    assert (d.batch_size, d.val_batch_size, d.bptt, d.bptt_p_full, d.bptt_sigma, d.bptt_min) == (
        20,
        10,
        70,
        0.95,
        5.0,
        5,
    )
    assert (m.embedding_size, m.hidden_size, m.layers, m.tie_weights) == (400, 1150, 3, True)
    assert (m.dropout, m.dropouth, m.dropouti, m.dropoute, m.wdrop) == (0.4, 0.2, 0.65, 0.1, 0.5)
    assert (m.alpha, m.beta) == (2.0, 1.0)
    assert (o.lr, o.lr_scaling, o.weight_decay) == (15.0, "sqrt", 1.2e-6)
    assert (o.ntasgd, o.nonmono, o.switch_at_eval) == (True, 5, None)
    assert task.official_differences(cfg) == []
    model = torch.nn.Linear(2, 2)
    optimizer = task.build_optimizer(cfg, model, 4)
    assert isinstance(optimizer, AveragingSGD)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(30.0)
    assert optimizer.param_groups[0]["weight_decay"] == 1.2e-6
    assert optimizer.param_groups[0]["momentum"] == 0
    schedule = task.build_schedule(cfg, optimizer, 4, 100, lr_scale=0.5)
    assert isinstance(schedule, NTASGDSchedule) and schedule.nonmono == 5
    assert schedule.lr == pytest.approx(15.0)


def test_prepare_data_counts_tokens_and_checks_the_files(
    real_wikitext2: Path, tmp_path: Path
) -> None:
    task, cfg = tiny(real_wikitext2)
    info = task.prepare_data(cfg)
    assert (info.train_size, info.val_size) == (5000, 3000)
    task, cfg = resolve_config("wikitext2-lstm", overrides=[f"data.dir={real_wikitext2}"])
    info = task.prepare_data(cfg)
    assert (info.train_size, info.val_size, info.issues) == (2_088_628, 217_646, ())
    with pytest.raises(ConfigError, match=r"data\.dir is not set"):
        task.prepare_data(resolve_config("wikitext2-lstm")[1])
    task, cfg = resolve_config("wikitext2-lstm", overrides=[f"data.dir={tmp_path}"])
    with pytest.raises(DataError, match="WikiText-2 not found"):
        task.prepare_data(cfg)


def test_too_few_tokens_for_the_columns_is_a_config_error(real_wikitext2: Path) -> None:
    task, cfg = tiny(real_wikitext2, "data.train_samples=100")
    task.validate(cfg, 1)  # 100 tokens in 4 columns: 25 rows
    with pytest.raises(ConfigError, match="too few for one window"):
        task.validate(cfg, 9)  # 36 columns: 2 rows


def test_state_is_carried_detached_and_reset_per_epoch(real_wikitext2: Path) -> None:
    task, cfg = tiny(real_wikitext2)
    data = task.build_data(cfg, ONE)
    assert data.facts == {"vocab_size": 33_278}
    torch.manual_seed(0)
    model = task.build_model(cfg, data.facts)
    model.eval()  # deterministic, so the state's effect is all that differs
    task.start_epoch(0)
    data.train.set_epoch(0)
    windows = iter(data.train)
    first, second = next(windows), next(windows)
    out = task.train_forward(model, first)
    assert out.units == first.seq_len * 4
    assert out.lr_factor == pytest.approx(first.seq_len / 70)
    carried = task._hidden
    assert carried is not None and all(h.grad_fn is None for h, _ in carried)
    out.loss.backward()  # the kept state is detached: the next window's backward stops here
    with_state = task.train_forward(model, second).loss.item()
    task.start_epoch(1)
    assert task._hidden is None
    from_zero = task.train_forward(model, second).loss.item()
    assert with_state != from_zero


def test_short_window_scales_the_lr(real_wikitext2: Path) -> None:
    task, cfg = tiny(real_wikitext2)
    data = task.build_data(cfg, ONE)
    model = task.build_model(cfg, data.facts)
    window = next(iter(data.train))
    short = Window(window.inputs[:7], window.targets[:7], 7)
    out = task.train_forward(model, short)
    assert out.lr_factor == pytest.approx(0.1) and out.units == 28
    assert math.isfinite(out.loss.item())


def test_evaluate_is_perplexity_over_every_target(real_wikitext2: Path) -> None:
    task, cfg = tiny(real_wikitext2)
    data = task.build_data(cfg, ONE)
    torch.manual_seed(0)
    model = task.build_model(cfg, data.facts).eval()
    metrics = task.evaluate(model, data.val, ONE)
    assert metrics["tokens"] == 10 * (3000 // 10 - 1)
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["loss"]))
    # an untrained model is close to uniform over the vocabulary
    assert 0.5 * 33_278 < metrics["perplexity"] < 2 * 33_278
    # by hand: one pass over the 10 columns with carried state, summed cross-entropy
    total, hidden = 0.0, None
    with torch.no_grad():
        for x, y, _ in data.val:
            out = model(x, hidden)
            hidden = out.hidden
            total += torch.nn.functional.cross_entropy(
                out.logits.view(-1, 33_278), y.view(-1), reduction="sum"
            ).item()
    assert metrics["loss"] == pytest.approx(total / metrics["tokens"], rel=1e-6)


def test_after_the_switch_validation_uses_the_averaged_weights(real_wikitext2: Path) -> None:
    task, cfg = tiny(real_wikitext2, "optim.switch_at_eval=1")
    data = task.build_data(cfg, ONE)
    torch.manual_seed(0)
    model = task.build_model(cfg, data.facts)
    optimizer = task.build_optimizer(cfg, model, 1)
    schedule = task.build_schedule(cfg, optimizer, 1, len(data.train))

    def evaluate() -> dict[str, float]:
        model.eval()
        with task.eval_context(model, optimizer):
            metrics = task.evaluate(model, data.val, ONE)
        model.train()
        return metrics

    first = evaluate()
    assert first["averaged"] == 0.0
    schedule.on_eval(first["loss"], 0)  # forced: the first evaluation switches
    assert isinstance(optimizer, AveragingSGD) and optimizer.averaging
    task.start_epoch(0)
    windows = iter(data.train)
    for _ in range(3):
        optimizer.zero_grad()
        task.train_forward(model, next(windows)).loss.backward()
        optimizer.step()
    trained = [p.detach().clone() for p in model.parameters()]
    averaged = evaluate()
    assert averaged["averaged"] == 1.0
    # the trained weights are back, and the average differs from them
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), trained, strict=True))
    model.eval()
    assert task.evaluate(model, data.val, ONE)["loss"] != averaged["loss"]
