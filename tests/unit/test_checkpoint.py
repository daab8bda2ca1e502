"""Checkpoint files, refusal rules, state round trips and the restart accounting
(``mlbench.train.checkpoint``), without processes: the exact-resume proofs on real ranks are
tests/dist/test_resume.py and tests/e2e/test_resume.py."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mlbench.attempts import Restart, record_restart
from mlbench.config import to_dict
from mlbench.data.loader import BatchLoader
from mlbench.errors import CheckpointError
from mlbench.results.from_events import rank_summary_from_events
from mlbench.results.summary import aggregate_ranks
from mlbench.runs import resolve_config
from mlbench.schedules import LRSchedule, NTASGDSchedule
from mlbench.telemetry.events import EventWriter
from mlbench.train import checkpoint as ckpt

CPU = torch.device("cpu")


def _save(run_dir: Path, step: int, ranks: int = 2, *, complete: bool = True) -> None:
    for r in range(ranks):
        ckpt.atomic_save(
            {"format": ckpt.FORMAT, "step": step, "rank": r}, ckpt.rank_file(run_dir, step, r)
        )
    if complete:
        ckpt.mark_complete(run_dir, step, {"world_size": ranks})


def _state(task: str = "epsilon-logreg", world_size: int = 2, **overrides: Any) -> dict[str, Any]:
    _, cfg = resolve_config(task, overrides=[f"{k}={v}" for k, v in overrides.items()])
    return {"task": task, "world_size": world_size, "config": to_dict(cfg)}


# ---------------------------------------------------------------------------- files


def test_a_checkpoint_without_its_marker_is_not_used(tmp_path: Path) -> None:
    _save(tmp_path, 10)
    _save(tmp_path, 20, complete=False)  # a crash after the rank files, before rank 0's marker
    assert ckpt.latest_complete(tmp_path) == 10
    _save(tmp_path, 20)
    assert ckpt.latest_complete(tmp_path) == 20
    assert not list(tmp_path.rglob("*.tmp"))  # every write was renamed into place


def test_keep_the_last_two(tmp_path: Path) -> None:
    for step in (5, 10, 15):
        _save(tmp_path, step)
    _save(tmp_path, 7, complete=False)  # an old crash's leftover
    _save(tmp_path, 25, complete=False)  # one being written now
    _save(tmp_path, 20)
    ckpt.prune(tmp_path)
    names = sorted(p.name for p in (tmp_path / ckpt.CHECKPOINTS_DIR).iterdir())
    assert names == ["step-15", "step-20", "step-25"]
    assert ckpt.complete_steps(tmp_path) == [15, 20]


def test_load_rank_refuses_foreign_and_missing_files(tmp_path: Path) -> None:
    _save(tmp_path, 4, ranks=1)
    assert ckpt.load_rank(tmp_path, 4, 0)["rank"] == 0
    with pytest.raises(CheckpointError, match="no file for rank 1"):
        ckpt.load_rank(tmp_path, 4, 1)
    ckpt.rank_file(tmp_path, 4, 0).write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint file"):
        ckpt.load_rank(tmp_path, 4, 0)
    torch.save({"format": 999}, ckpt.rank_file(tmp_path, 4, 0))
    with pytest.raises(CheckpointError, match="not an mlbench checkpoint"):
        ckpt.load_rank(tmp_path, 4, 0)


def test_a_checkpoint_cannot_run_code_when_loaded(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self) -> Any:
            return (print, ("pwned",))

    path = ckpt.rank_file(tmp_path, 1, 0)
    path.parent.mkdir(parents=True)
    torch.save({"format": ckpt.FORMAT, "x": Evil()}, path)
    with pytest.raises(CheckpointError, match="cannot read"):
        ckpt.load_rank(tmp_path, 1, 0)


# ---------------------------------------------------------------------------- refusals


def test_refuses_another_task() -> None:
    _, cfg = resolve_config("cifar10-resnet20")
    with pytest.raises(CheckpointError, match="for task 'epsilon-logreg', not 'cifar10-resnet20'"):
        ckpt.check_compatible(
            _state(), task="cifar10-resnet20", config=to_dict(cfg), world_size=2, where=Path("c")
        )


def test_refuses_another_world_size() -> None:
    state = _state()
    with pytest.raises(CheckpointError, match="written by 2 ranks, this run has 4"):
        ckpt.check_compatible(
            state, task="epsilon-logreg", config=state["config"], world_size=4, where=Path("c")
        )


def test_refuses_another_config_naming_the_keys() -> None:
    current = _state(**{"optim.lr": 0.5, "seed": 7})["config"]
    with pytest.raises(CheckpointError) as err:
        ckpt.check_compatible(
            _state(), task="epsilon-logreg", config=current, world_size=2, where=Path("c")
        )
    assert "optim.lr" in str(err.value) and "seed (42 → 7)" in str(err.value)


def test_run_control_keys_may_differ() -> None:
    """Stop limits, logging and checkpoint cadence and the data's location change no number the
    run computes: a run may be continued with a later max_steps, for instance."""
    current = _state(
        **{
            "train.max_steps": 500,
            "train.time_limit": 60,
            "train.log_every_steps": 1,
            "train.checkpoint_every_steps": 3,
            "data.dir": "/elsewhere",
        }
    )["config"]
    ckpt.check_compatible(
        _state(), task="epsilon-logreg", config=current, world_size=2, where=Path("c")
    )
    assert ckpt.config_differences(_state()["config"], current) == []


# ---------------------------------------------------------------------------- state round trips


def _reload(obj: Any, tmp_path: Path) -> Any:
    """Through the file, as a resume reads it (torch's restricted unpickler)."""
    torch.save(obj, tmp_path / "x.pt")
    return torch.load(tmp_path / "x.pt", weights_only=True)


def test_rng_states_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.randn()  # leaves a cached Gaussian in numpy's legacy state
    saved = _reload(ckpt.rng_state(CPU), tmp_path)
    before = (torch.rand(3), np.random.randn(3), random.random())
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    ckpt.set_rng_state(saved, CPU)
    after = (torch.rand(3), np.random.randn(3), random.random())
    assert torch.equal(before[0], after[0])
    assert np.array_equal(before[1], after[1]) and before[2] == after[2]


def test_loader_state_round_trips_shuffle_and_augmentation(tmp_path: Path) -> None:
    x, y = torch.randn(40, 3), torch.arange(40)

    def noisy(xb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return xb + torch.rand(xb.shape, generator=gen)

    loader = BatchLoader(x, y, 8, shuffle=True, drop_last=True, seed=5, transform=noisy)
    list(loader)  # one epoch on
    saved = _reload(ckpt.loader_state(loader), tmp_path)
    expected = list(loader)
    list(loader)  # and another: the generator moved
    ckpt.set_loader_state(loader, saved)
    for (a, b), (c, d) in zip(expected, list(loader), strict=True):
        assert torch.equal(a, c) and torch.equal(b, d)


def test_numpy_and_python_generators_in_a_loader(tmp_path: Path) -> None:
    class Loader:
        def __init__(self) -> None:
            self.np_gen = np.random.default_rng(1)
            self.py_gen = random.Random(2)

    loader = Loader()
    saved = _reload(ckpt.loader_state(loader), tmp_path)
    before = (loader.np_gen.random(), loader.py_gen.random())
    ckpt.set_loader_state(loader, saved)
    assert (loader.np_gen.random(), loader.py_gen.random()) == before


def _optimizer() -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)


def test_plateau_schedule_round_trips(tmp_path: Path) -> None:
    def make() -> LRSchedule:
        return LRSchedule(
            _optimizer(), start_lr=0.1, peak_lr=1.0, warmup_steps=0, plateau=True,
            factor=0.5, patience=1, threshold=0.0, min_lr=0.0,
        )  # fmt: skip

    a = make()
    for loss in (1.0, 0.5, 0.6):  # one bad evaluation: the next bad one halves the lr
        a.on_eval(loss, 10)
    b = make()
    ckpt.load_schedule_state(b, _reload(ckpt.schedule_state(a), tmp_path))
    a.on_eval(0.7, 11), b.on_eval(0.7, 11)
    assert a.lr == b.lr == 0.5


def test_ntasgd_trigger_round_trips(tmp_path: Path) -> None:
    a = NTASGDSchedule(_optimizer(), lr=1.0, nonmono=2)
    for loss in (5.0, 4.0, 3.0):
        a.on_eval(loss, 1)
    b = NTASGDSchedule(_optimizer(), lr=1.0, nonmono=2)
    ckpt.load_schedule_state(b, _reload(ckpt.schedule_state(a), tmp_path))
    fresh = NTASGDSchedule(_optimizer(), lr=1.0, nonmono=2)
    for schedule in (a, b, fresh):
        schedule.on_eval(5.5, 40)  # above the best but the last two: the switch
    assert a.switched_at == b.switched_at == 40 and fresh.switched_at is None


def test_a_schedule_without_state_dict_keeps_its_plain_attributes(tmp_path: Path) -> None:
    class Counting:
        def __init__(self) -> None:
            self.optimizer = _optimizer()
            self.evals, self.history = 0, [0.0]

    a = Counting()
    a.evals, a.history = 3, [1.0, 2.0]
    b = Counting()
    ckpt.load_schedule_state(b, _reload(ckpt.schedule_state(a), tmp_path))
    assert (b.evals, b.history) == (3, [1.0, 2.0]) and b.optimizer is not a.optimizer


# ---------------------------------------------------------------------------- restart accounting


def _window(step: int, train_time: float, when: float) -> list[dict[str, Any]]:
    base = {"step": step, "epoch": 0.0, "time": when}
    return [
        {**base, "kind": "train", "name": "loss", "value": 1.0 / step},
        {**base, "kind": "train", "name": "train_time", "value": train_time},
        {**base, "kind": "train", "name": "throughput", "value": 10 / train_time},
        {**base, "kind": "comm", "name": "bytes_sent", "value": 8.0},
    ]


def _marker(
    attempt: int, resumed: int, cost: ckpt.RestartCost, when: float
) -> list[dict[str, Any]]:
    base = {"step": resumed, "epoch": 0.0, "time": when, "kind": "event"}
    values = [
        ("attempt", attempt),
        ("resume", resumed),
        ("lost_steps", cost.lost_steps),
        ("lost_train_time", cost.lost_train_time_s),
        ("downtime", cost.downtime_s),
        ("restart_cost", cost.cost_s),
    ]
    return [{**base, "name": n, "value": v} for n, v in values]


def _restart(attempt: int, failed_at: float, by: str = "engine") -> Restart:
    return Restart(attempt, f"reason {attempt}", failed_at, failed_at + 1, by)


def test_one_restart_costs_the_lost_work_and_the_downtime() -> None:
    # attempt 0: steps 1..7 at 0.5 s each, checkpoint at 4, crash seen at t=100
    records = [r for s in range(1, 8) for r in _window(s, 0.5, 90 + s)]
    [cost] = ckpt.account_restarts(
        records, [_restart(1, 100.0)], resumed_from=4, first_step_at=130.0
    )
    assert cost.attempt == 1 and cost.resumed_from_step == 4
    assert cost.lost_steps == 3 and cost.lost_train_time_s == pytest.approx(1.5)
    assert cost.downtime_s == 30.0 and cost.cost_s == pytest.approx(31.5)


def test_steps_past_the_last_logged_window_count_as_lost() -> None:
    """The events stop at the last flushed window (step 7); the engine saw rank 1 at step 10
    (its heartbeat): steps 8..10 are lost too, at the logged lost steps' mean (0.5 s); rank 0,
    not seen further, keeps the logged count. Without logged lost steps the run's mean step time
    up to the checkpoint is used."""
    records = [r for s in range(1, 8) for r in _window(s, 0.5, 90 + s)]
    seen = Restart(1, "kill", 100.0, 101.0, "engine", {"0": 7, "1": 10})
    [cost] = ckpt.account_restarts(records, [seen], resumed_from=4, first_step_at=130.0, rank=1)
    assert cost.lost_steps == 6 and cost.lost_train_time_s == pytest.approx(3.0)
    [cost] = ckpt.account_restarts(records, [seen], resumed_from=4, first_step_at=130.0, rank=0)
    assert cost.lost_steps == 3 and cost.lost_train_time_s == pytest.approx(1.5)
    unlogged = [r for s in range(1, 5) for r in _window(s, 0.5, 90 + s)]
    [cost] = ckpt.account_restarts(
        unlogged, [seen], resumed_from=4, first_step_at=130.0, rank=1, step_time=0.25
    )
    assert cost.lost_steps == 6 and cost.lost_train_time_s == pytest.approx(1.5)


def test_a_second_restart_from_the_same_checkpoint() -> None:
    first = ckpt.RestartCost(1, "engine", "reason 1", 4, 3, 1.5, 30.0)
    records = [r for s in range(1, 8) for r in _window(s, 0.5, 90 + s)]
    records += _marker(1, 4, first, 130.0)
    records += [r for s in range(5, 7) for r in _window(s, 0.25, 130 + s)]  # redone 5, 6: crash
    restarts = [_restart(1, 100.0), _restart(2, 140.0)]
    costs = ckpt.account_restarts(records, restarts, resumed_from=4, first_step_at=150.0)
    assert costs[0] == first  # read back from what attempt 1 recorded
    assert costs[1].lost_steps == 2 and costs[1].lost_train_time_s == pytest.approx(0.5)
    assert costs[1].downtime_s == 10.0


def test_an_attempt_that_never_trained_extends_the_next_downtime() -> None:
    """Attempt 1 died in its set-up (no marker): its life is downtime, so restart 2's downtime
    runs from attempt 0's failure and its lost work is still attempt 0's."""
    records = [r for s in range(1, 8) for r in _window(s, 0.5, 90 + s)]
    restarts = [_restart(1, 100.0), _restart(2, 120.0)]
    costs = ckpt.account_restarts(records, restarts, resumed_from=4, first_step_at=150.0)
    assert costs[0].cost_s == 0 and costs[0].resumed_from_step is None
    assert costs[1].downtime_s == 50.0 and costs[1].lost_steps == 3


def test_from_events_keeps_the_last_attempt_per_step(tmp_path: Path) -> None:
    writer = EventWriter(tmp_path / "rank-0.jsonl", "run", 0)
    for s in range(1, 8):  # attempt 0: 7 steps, the last 3 lost
        writer.emit_many(
            [("train", "train_time", 0.5, "s"), ("comm", "bytes_sent", 8.0, "B")], step=s, epoch=0.0
        )
    restart = record_restart(tmp_path, "killed", failed_at=0.0, by="engine")
    cost = ckpt.RestartCost(1, "engine", "killed", 4, 3, 1.5, 30.0)
    writer.emit_many(
        [
            (k, n, float(v), None)
            for k, n, v in [(m["kind"], m["name"], m["value"]) for m in _marker(1, 4, cost, 0.0)]
        ],
        step=4,
        epoch=0.0,
    )
    for s in range(5, 10):  # attempt 1: 5..9
        writer.emit_many(
            [("train", "train_time", 0.25, "s"), ("comm", "bytes_sent", 8.0, "B")],
            step=s,
            epoch=0.0,
        )
    writer.close()
    summary = rank_summary_from_events(tmp_path, 0)
    assert summary is not None
    assert summary["steps"] == 9
    assert summary["bytes_sent"] == 9 * 8  # one window per step, the lost ones dropped
    # the kept steps' time plus the restart's cost: what the loop's own train_time reports
    assert summary["train_time"] == pytest.approx(4 * 0.5 + 5 * 0.25 + 31.5)
    assert summary["restart_cost"] == pytest.approx(31.5)
    assert summary["restarts"] == [dict(cost.as_dict(), reason=restart.reason)]


def test_summary_merges_restarts_over_ranks() -> None:
    def rank(r: int, lost: float, down: float) -> dict[str, Any]:
        entry = ckpt.RestartCost(1, "user", "resumed by user", 4, 3, lost, down).as_dict()
        return {
            "rank": r,
            "train_time": 10.0,
            "steps": 9,
            "restarts": [entry],
            "restart_cost": lost + down,
        }

    agg = aggregate_ranks([rank(0, 1.0, 5.0), rank(1, 2.0, 4.0)])
    [entry] = agg["restarts"]
    assert entry["lost_train_time_s"] == 2.0 and entry["downtime_s"] == 5.0
    assert agg["restart_cost_s"] == 6.0
    assert aggregate_ranks([{"rank": 0, "steps": 1}])["restarts"] == []


def test_clock_file(tmp_path: Path) -> None:
    assert ckpt.read_clock(tmp_path) is None
    ckpt.write_clock(tmp_path, 123.5)
    assert ckpt.read_clock(tmp_path) == 123.5
    assert json.loads((tmp_path / ckpt.CLOCK_FILE).read_text()) == {"started_at": 123.5}
