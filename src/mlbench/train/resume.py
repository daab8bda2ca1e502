"""The training loop's side of checkpoints and resume: what a checkpoint holds of the loop, and
how a resumed attempt puts it back (docs/checkpoints.md).

Why a module of its own: the loop (:mod:`mlbench.train.loop`) owns the step; this is the state
around it — the measurement state a checkpoint must carry, the clock that never pauses across
restarts (MLPerf's rule), the replay of the resumed epoch's batches, and the restart costs — and
it reads the trainer's fields directly rather than through a wide interface, since the two are
one unit kept apart only for size. The file formats, atomic writes, refusals and the restart
arithmetic are :mod:`mlbench.train.checkpoint`'s.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import torch

from mlbench.attempts import read_restarts
from mlbench.config import to_dict
from mlbench.errors import CheckpointError
from mlbench.telemetry.events import read_events
from mlbench.train import checkpoint as ckpt

if TYPE_CHECKING:
    from mlbench.train.loop import _Trainer


def save(tr: _Trainer, epoch_index: int, end_of_epoch: bool) -> None:
    """Every rank saves its state at this step; rank 0 marks the checkpoint complete once
    every rank's file is durable (docs/checkpoints.md). The log window is closed first, so
    a resumed attempt's windows start where the uninterrupted run's do."""
    tr._flush_window()
    start = time.perf_counter()
    with tr.timer.phase("checkpoint"):
        state = state_of(tr, epoch_index, end_of_epoch)
        ckpt.atomic_save(state, ckpt.rank_file(tr.run_dir, tr.step, tr.dist.rank))
        # a collective every rank enters only with its own file durable: after it, the
        # set is whole and rank 0 may say so
        done = torch.ones(1, device=tr.dist.device)
        tr.dist.all_reduce_sum(done)
        if tr.dist.is_main:
            ckpt.mark_complete(
                tr.run_dir,
                tr.step,
                {"world_size": tr.dist.world_size, "task": tr.task.name},
            )
            ckpt.prune(tr.run_dir)
    tr.emit("phase", "checkpoint", time.perf_counter() - start, "s")


def state_of(tr: _Trainer, epoch_index: int, end_of_epoch: bool) -> dict[str, Any]:
    """Everything this rank needs to continue exactly from here."""
    if end_of_epoch:
        # the next epoch's start: set_epoch is idempotent, and the loop calls it next anyway
        tr.train_data.set_epoch(epoch_index + 1)
        position = (epoch_index + 1, 0, ckpt.loader_state(tr.train_data))
    else:
        consumed = tr.step - tr._epoch_first_step
        position = (epoch_index, consumed, tr._epoch_loader_state)
    s, timer = tr.summary, tr.timer
    return {
        "format": ckpt.FORMAT,
        "task": tr.task.name,
        "world_size": tr.dist.world_size,
        "rank": tr.dist.rank,
        "config": to_dict(tr.cfg),
        "step": tr.step,
        "attempt": tr._attempt,
        "model": tr.module.state_dict(),
        "optimizer": tr.optimizer.state_dict(),
        "algorithm": tr.algorithm.state_dict(),
        "precision": tr.precision.state_dict(),
        "schedule": ckpt.schedule_state(tr.schedule),
        "task_state": tr.task.state_dict(),
        "rng": ckpt.rng_state(tr.dist.device),
        "loader": {"epoch": position[0], "consumed": position[1], "state": position[2]},
        "measure": {
            "epoch": tr.epoch,
            "eval_marks": tr._eval_marks,
            "last_eval_step": tr._last_eval_step,
            "bytes_total": tr._bytes_total,
            "setup_bytes": tr._setup_bytes,
            "train_time": timer.train_time,
            "phases": timer.totals,
            "samples": s.samples,
            "evals": s.evals,
            "goal_reached": s.goal_reached,
            "time_to_target": s.time_to_target,
            "wall_time_to_target": s.wall_time_to_target,
            "step_at_target": s.step_at_target,
            "bytes_at_target": s.bytes_at_target,
            "final_metrics": dict(s.final_metrics),
        },
    }


def load_latest(tr: _Trainer) -> dict[str, Any] | None:
    """This rank's state of the run's latest complete checkpoint (None: there is none yet),
    refused when it belongs to another task, config or world size."""
    step = ckpt.latest_complete(tr.run_dir)
    if step is None:
        return None
    state = ckpt.load_rank(tr.run_dir, step, tr.dist.rank)  # on the CPU, as saved
    ckpt.check_compatible(
        state,
        task=tr.task.name,
        config=to_dict(tr.cfg),
        world_size=tr.dist.world_size,
        where=ckpt.step_dir(tr.run_dir, step),
    )
    return state


def restore(tr: _Trainer, state: dict[str, Any]) -> tuple[int, int]:
    """Put the checkpoint's state back (after the scheme's set-up, which it overrides);
    returns where the loader is to continue: ``(epoch index, steps done in it)``. The
    loader itself, the task's carried state and the RNGs come back in
    :meth:`_finish_resume`, once the loader is at that position."""
    tr.module.load_state_dict(state["model"])
    tr.optimizer.load_state_dict(state["optimizer"])
    tr.algorithm.load_state_dict(state["algorithm"])
    tr.precision.load_state_dict(state["precision"])
    ckpt.load_schedule_state(tr.schedule, state["schedule"])
    m, s = state["measure"], tr.summary
    tr.step, tr.epoch = int(state["step"]), float(m["epoch"])
    tr.position.current = (tr.step, tr.epoch)
    tr._eval_marks, tr._last_eval_step = int(m["eval_marks"]), int(m["last_eval_step"])
    tr._bytes_total, tr._setup_bytes = int(m["bytes_total"]), int(m["setup_bytes"])
    tr._window_bytes_mark = tr.algorithm.bytes_sent
    tr.timer.restore(float(m["train_time"]), m["phases"])
    s.samples, s.evals, s.goal_reached = int(m["samples"]), int(m["evals"]), m["goal_reached"]
    s.time_to_target, s.wall_time_to_target = m["time_to_target"], m["wall_time_to_target"]
    s.step_at_target, s.bytes_at_target = m["step_at_target"], m["bytes_at_target"]
    s.final_metrics = dict(m["final_metrics"])
    tr._plan_quiet()
    return int(state["loader"]["epoch"]), int(state["loader"]["consumed"])


def start_clock(tr: _Trainer, resuming: bool) -> None:
    """``wall_start``: now, or — resuming — the first attempt's start (``RUN/clock.json``),
    so wall times and the time limit count from it (MLPerf: the clock never pauses)."""
    now_unix, now = time.time(), time.perf_counter()
    started = ckpt.read_clock(tr.run_dir) if resuming else None
    if started is None:
        started = now_unix
        if tr.dist.is_main:
            ckpt.write_clock(tr.run_dir, started)
    tr.wall_start = now - (now_unix - started)
    if not resuming:
        tr.emit("event", "start", 0)
    tr._window_start = time.perf_counter()  # set-up (and the clock's fsync) is no window's


def finish_resume(tr: _Trainer, state: dict[str, Any] | None, batches: Any, consumed: int) -> int:
    """The resumed attempt's last preparations before its first step: replay the epoch's
    ``consumed`` steps' batches (the loader's generators then stand where they stood when those
    batches were drawn: the loop's one-group look-ahead is drawn again by the next step; an
    iterator with ``skip(n)``, whose batches are a function of their position, moves past them
    without producing them — ImageStreamLoader would otherwise decode them all), restore the
    task's carried state and the process RNGs, continue the train-time clock with the restarts'
    cost, and say so in the events. Returns the steps done in the current epoch."""
    if batches is not None:
        skip = getattr(batches, "skip", None)  # a streaming loader's replay without decoding
        if callable(skip):
            replayed = skip(consumed * tr._accumulate) == consumed * tr._accumulate
        else:
            replayed = all(tr._fetch(batches) is not None for _ in range(consumed))
        if not replayed:
            raise CheckpointError(
                f"the training loader ran out while replaying {consumed} steps of "
                "the resumed epoch: it does not yield what it yielded before"
            )
    if state is not None:
        tr.task.load_state_dict(ckpt.to_device(state["task_state"], tr.dist.device))
        ckpt.set_rng_state(state["rng"], tr.dist.device)
    restarts = read_restarts(tr.run_dir)
    resumed_from = tr.step
    tr._attempt = len(restarts)
    records: list[tuple[str, str, float, str | None]] = []
    if restarts:
        costs = ckpt.account_restarts(
            read_events(tr.events.path),
            restarts,
            resumed_from=resumed_from,
            first_step_at=time.time(),
            rank=tr.dist.rank,
            step_time=tr.timer.train_time / resumed_from if resumed_from else 0.0,
        )
        since = int(state["attempt"]) if state is not None else 0
        extra = sum(c.cost_s for c in costs if c.attempt > since)
        tr.timer.train_time += extra
        own = costs[-1]
        tr.summary.restarts = [c.as_dict() for c in costs]
        tr.summary.restart_cost = sum(c.cost_s for c in costs)
        records += [
            ("event", "attempt", float(tr._attempt), None),
            ("event", "resume", float(resumed_from), None),
            ("event", "lost_steps", float(own.lost_steps), None),
            ("event", "lost_train_time", own.lost_train_time_s, "s"),
            ("event", "downtime", own.downtime_s, "s"),
            ("event", "restart_cost", own.cost_s, "s"),
        ]
    else:  # resumed without a restart on record (RESUME_ENV set by hand): nothing to cost
        records.append(("event", "resume", float(resumed_from), None))
    tr.events.emit_many(records, step=tr.step, epoch=round(tr.epoch, 6))
    tr._window_start = time.perf_counter()
    return consumed
