"""The one training loop every task and algorithm runs through.

Per step, each phase is timed by the loop's own :class:`PhaseTimer` (as laps: contiguous)::

    data → [forward (train_forward: model + loss) → backward (incl. zero_grad)] × accumulate
         → communication → optimizer (incl. clipping) → communication (post-step hook)

The loop is handed its task and its scheme (a class; it never looks either up). It owns what
every scheme must run under on every task: gradient accumulation (``train.accumulate``; the
scheme's ``no_sync()`` holds communication until the last micro-batch), global normalisation
(``train.normalize``), clipping after the reduction (``train.clip_grad_norm``), the task's
per-step lr factor, evaluation cadence (``train.eval_every_epochs``, fractions allowed) and timing.
A loader is run to exhaustion: its ``len()`` is the plan for epoch fractions, the end of its
iterator is the end of the epoch (one group of micro-batches is fetched ahead to know it).

Evaluation runs between steps (``eval`` phase, outside train time). The loop never branches on
world size and never holds a hyperparameter: those come from the task's config. Stopping rules
that depend on a rank-local clock (the time limit) are agreed on by a tiny max-all-reduce so all
ranks stop at the same step; the others (max steps/epochs, goal on all-reduced metrics) are
identical on every rank by construction.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mlbench.attempts import RESUME_ENV
from mlbench.dist import DistContext
from mlbench.tasks.base import RunConfig, StepOut, Task
from mlbench.telemetry.events import EventWriter
from mlbench.telemetry.summary import RankSummary
from mlbench.train import checkpoint as ckpt
from mlbench.train import resume
from mlbench.train.layout import channels_last_batches, channels_last_model
from mlbench.train.precision import Precision
from mlbench.train.timer import STEP_PHASES, PhaseTimer

if TYPE_CHECKING:
    from collections.abc import Callable

    from mlbench.algorithms.base import Algorithm

PROGRESS_SECONDS = 1.0  # the least time between two progress lines on a rank's stdout


class LoopPosition:
    """The loop's current ``(step, epoch)`` for readers on other threads (the resource sampler).

    The loop replaces one immutable tuple after each step, so a reader always gets a consistent
    pair without a lock — possibly one step old, which is fine for labelling a sample.
    """

    __slots__ = ("current",)

    def __init__(self) -> None:
        self.current: tuple[int, float] = (0, 0.0)

    def __call__(self) -> tuple[int, float]:
        return self.current


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class StepMismatch(RuntimeError):
    """Ranks took different numbers of steps in an epoch (their loaders disagree)."""


class _Trainer:
    def __init__(
        self,
        task: Task,
        cfg: RunConfig,
        dist: DistContext,
        events: EventWriter,
        run_dir: Path,
        algorithm: type[Algorithm],
        position: LoopPosition | None = None,
        fault: Callable[[int, PhaseTimer], None] | None = None,
    ) -> None:
        self.task, self.cfg, self.dist, self.events = task, cfg, dist, events
        self._fault = fault  # an injected fault (--fault), called after every step
        self.run_dir = run_dir
        self.algorithm_cls = algorithm
        self.position = position if position is not None else LoopPosition()
        self.timer = PhaseTimer(dist.synchronize if dist.device.type == "cuda" else None)
        self.summary = RankSummary(rank=dist.rank, unit=task.unit)
        self.unit_rate = f"{task.unit}/s"
        self.step = 0
        self.epoch = 0.0
        # The window's loss sum. On a GPU a float64 tensor on the device, read (a host sync) only
        # when the window is flushed. On the CPU nothing is asynchronous, and loss.item() into a
        # Python float costs 0.24 µs against 3.2 µs for a tensor add_ — 0.6 % of a 2a step.
        self._loss_on_host = dist.device.type == "cpu"
        self._window_loss = torch.zeros((), dtype=torch.float64, device=dist.device)
        self._window_loss_host = 0.0
        self._window_steps = 0
        self._window_samples = 0
        # bytes the scheme had sent when the window opened (read at the flush, not per step;
        # only steps send through the scheme: setup is before the first window)
        self._window_bytes_mark = 0
        self._window_start = time.perf_counter()
        self._bytes_total = 0
        self._last_progress = -math.inf
        self._progress: str | None = None  # the latest window's line, if not printed yet
        self._last_eval_step = -1
        self._eval_marks = 0  # evaluations due so far by the eval_every_epochs cadence
        #: the next step's batch (plain step) or micro-batches, fetched ahead
        self._ahead: Any = None
        # fixed for the run, read once (the step's hot path; see _train_step)
        tc = cfg.train
        self._fp32 = tc.precision == "fp32"
        self._global = tc.normalize == "global"
        self._clip = tc.clip_grad_norm
        self._overlaps = False  # the scheme's, set in run() once it exists
        self._applied_only = False  # the schedule's, likewise
        #: one fp32 micro-batch per step, per-rank mean: the step as it always was (fast path)
        #: micro-batches per step: ``train.accumulate``, or what the task derives from the
        #: world size (4a/4b: a fixed global batch whatever k)
        self._accumulate = task.accumulation(cfg, dist.world_size)
        self._plain = self._accumulate == 1 and not self._global and self._fp32
        # _after_step's quiet stretch: before step ``_quiet_until`` and epoch ``_next_mark`` no
        # stop rule, evaluation or checkpoint can fire, only the log window (see _after_step)
        self._quiet_until = 0
        self._next_mark = 0.0
        self._log_steps = tc.log_every_steps
        # checkpoints and resume (docs/checkpoints.md): the attempt (0: the first, n: after the
        # n-th restart), the loader's random state when the current epoch began (a mid-epoch
        # resume replays the epoch's batches from it), the step the epoch began at, the bytes
        # the scheme's set-up sent (not the run's: subtracted from the summary)
        self._attempt = 0
        #: perf_counter() at the run's start — the first attempt's, on a resume (see
        #: :func:`mlbench.train.resume.start_clock`)
        self.wall_start = 0.0
        self._epoch_loader_state: dict[str, Any] = {}
        self._epoch_first_step = 0
        self._setup_bytes = 0

    # ------------------------------------------------------------------ events
    def emit(self, kind: str, name: str, value: float, unit: str | None = None) -> None:
        self.events.emit(kind, name, value, step=self.step, epoch=round(self.epoch, 6), unit=unit)

    def _flush_window(self) -> None:
        if self._window_steps == 0:
            return
        sent = self.algorithm.bytes_sent
        window_bytes, self._window_bytes_mark = sent - self._window_bytes_mark, sent
        self.summary.samples += self._window_samples
        phases, step_time = self.timer.take_window()
        if self._loss_on_host:
            loss = self._window_loss_host / self._window_steps
        else:
            loss = float(self._window_loss) / self._window_steps
        rate = self._window_samples / max(step_time, 1e-12)
        # A human-readable line on the rank's stdout (the dashboard's output pane, `tail -f
        # rank-0.stdout`), at most one a second and always the last: a window on task 2a lasts
        # ~5 ms, and a flushed line per window was ~200 lines/s of log and ~30 µs of system
        # call each. The numbers of record are the events below, written for every window.
        self._progress = (
            f"step {self.step} epoch {self.epoch:.2f} loss {loss:.4f} {rate:.1f} {self.unit_rate}"
        )
        now = time.monotonic()
        if now - self._last_progress >= PROGRESS_SECONDS:
            self._last_progress = now
            print(self._progress, flush=True)
            self._progress = None
        self._bytes_total += window_bytes
        records: list[tuple[str, str, float, str | None]] = [
            ("train", "loss", loss, None),
            ("train", "lr", self.schedule.lr, None),
            ("train", "train_time", step_time, "s"),
            ("train", "throughput", rate, self.unit_rate),
            *(("phase", name, phases[name], "s") for name in STEP_PHASES),
            ("comm", "bytes_sent", float(window_bytes), "B"),
            ("comm", "bytes_total", float(self._bytes_total), "B"),
        ]
        if window_bytes > 0:
            dense = self.algorithm.dense_bytes_per_step * self._window_steps
            records.append(("comm", "compression_ratio", dense / window_bytes, None))
        # one write for the window (on a 0.45 ms step, 13 separate emits were ~3 % of the step)
        self.events.emit_many(records, step=self.step, epoch=round(self.epoch, 6))
        if self._loss_on_host:
            self._window_loss_host = 0.0
        else:
            self._window_loss.zero_()
        self._window_steps = self._window_samples = 0
        self._window_start = time.perf_counter()

    # ------------------------------------------------------------------ main
    def run(self) -> RankSummary:
        cfg, dist, task, timer = self.cfg, self.dist, self.task, self.timer
        tc = cfg.train
        seed_everything(cfg.seed)
        data = task.build_data(cfg, dist)
        train_data, self.val_data = data.train, data.val
        self.train_data = train_data
        steps_per_epoch = len(train_data) // self._accumulate  # the plan, not a promise
        if steps_per_epoch == 0:
            raise ValueError(
                f"this rank's training shard is smaller than one step "
                f"({self._accumulate} micro-batch(es) of data.batch_size)"
            )
        self.algorithm = self.algorithm_cls(cfg.algorithm, dist)
        # ``module`` is the plain model (evaluation, checkpoints); ``model`` is what trains —
        # the same object unless the scheme wraps it (DDP)
        self.module = task.build_model(cfg, data.facts).to(dist.device)
        if tc.channels_last:  # NHWC 4-D weights; the batches follow below (train/layout.py)
            self.module = channels_last_model(self.module)
        self.model = self.algorithm.wrap(self.module)
        task_optimizer = task.build_optimizer(cfg, self.module, dist.world_size)
        self.optimizer = self.algorithm.build_optimizer(self.module, task_optimizer)
        self.schedule = task.build_schedule(
            cfg,
            self.optimizer,
            dist.world_size,
            steps_per_epoch,
            lr_scale=self.algorithm.lr_scale(cfg),
        )
        self.precision = Precision(
            tc.precision,
            dist.device,
            dist,
            init_scale=tc.loss_scale_init,
            window=tc.loss_scale_window,
            max_scale=tc.loss_scale_max,
        )
        self._applied_only = bool(getattr(self.schedule, "counts_applied_steps", False))
        self.algorithm.setup(self.model)
        self._overlaps = bool(self.algorithm.overlaps)
        self._setup_bytes = self._window_bytes_mark = self.algorithm.bytes_sent

        planned = steps_per_epoch * tc.max_epochs
        if tc.max_steps is not None:
            planned = min(planned, tc.max_steps)
        self.emit("event", "steps_per_epoch", steps_per_epoch)
        self.emit("event", "planned_steps", planned)
        for name, value in data.recorded.items():
            self.emit("event", name, value)

        resuming = os.environ.get(RESUME_ENV) == "1"
        state = resume.load_latest(self) if resuming else None
        epoch_index, consumed = 0, 0
        if state is not None:
            epoch_index, consumed = resume.restore(self, state)
        resume.start_clock(self, resuming)
        stop: str | None = None
        self.model.train()
        if resuming and epoch_index >= tc.max_epochs:  # resumed at the last epoch's end
            resume.finish_resume(self, state, None, 0)
        while stop is None:
            if epoch_index >= tc.max_epochs:
                stop = "max_epochs"
                break
            task.start_epoch(epoch_index)
            train_data.set_epoch(epoch_index)
            if state is not None:  # the loader as it was when this epoch began
                ckpt.set_loader_state(train_data, state["loader"]["state"])
            self._epoch_loader_state = ckpt.loader_state(train_data)
            batches = iter(train_data)
            if tc.channels_last:
                batches = channels_last_batches(batches)
            self._ahead = None
            i = 0
            if resuming:
                i = resume.finish_resume(self, state, batches, consumed)
                resuming, state = False, None
            self._epoch_first_step = self.step - i
            while stop is None:
                last = self._train_step(batches, steps_per_epoch, epoch_index, i)
                if self._fault is not None:
                    self._fault(self.step, self.timer)
                i += 1
                # the between-steps work, skipped outright in a quiet stretch (see _after_step)
                if (
                    last
                    or self.step >= self._quiet_until
                    or self.epoch >= self._next_mark
                    or self._window_steps >= self._log_steps
                ):
                    stop = self._after_step(epoch_index, last)
                if last:
                    break
            if epoch_index == 0 and (stop is None or last):
                self._check_same_steps(i)
            epoch_index += 1
            if stop is None and epoch_index >= tc.max_epochs:
                stop = "max_epochs"
        self._flush_window()
        if self._progress is not None:  # the last window's line, held back by the rate limit
            print(self._progress, flush=True)
        if self._last_eval_step != self.step:
            self._evaluate()  # final metrics always describe the final model
        s = self.summary
        s.steps, s.epochs, s.stop_reason = self.step, self.epoch, stop
        s.train_time = timer.train_time
        s.wall_time = time.perf_counter() - self.wall_start
        s.phases = dict(timer.totals)
        s.bytes_sent = self.algorithm.bytes_sent - self._setup_bytes
        s.dense_bytes = self.algorithm.dense_bytes_per_step * self.step
        s.collectives = self.algorithm.collectives
        s.algorithm_stats = self.algorithm.stats()
        s.precision = self.precision.mode
        s.skipped_steps = self.precision.skipped_steps
        s.loss_scale = self.precision.scale if self.precision.mode == "fp16" else None
        s.lr = self.schedule.lr
        self.emit("event", "end", 1)
        return s

    def _check_same_steps(self, steps: int) -> None:
        """Once, after the first epoch: every rank took the same number of steps (a scheme's
        collectives would otherwise pair up wrongly and hang or mix tensors)."""
        t = torch.tensor([float(steps), -float(steps)], device=self.dist.device)
        self.dist.all_reduce_max(t)
        if t[0].item() != -t[1].item():
            raise StepMismatch(
                f"ranks took between {int(-t[1].item())} and {int(t[0].item())} steps in the "
                f"first epoch (this rank {steps}): every rank's loader must yield the same "
                "number of batches"
            )

    def _fetch(self, batches: Any) -> list[Any] | None:
        """The next step's micro-batches (``train.accumulate`` or the task's derived count), or
        None at the loader's end."""
        group = []
        for _ in range(self._accumulate):
            batch = next(batches, None)
            if batch is None:
                return None
            group.append(batch)
        return group

    def _micro(self, batch: Any, micro_batches: int, first: bool) -> StepOut:
        """Forward and backward of one micro-batch (the general step: accumulation, global
        normalisation, fp16/bf16). The loss is backpropagated divided by the micro-batch count,
        or times its units (global normalisation)."""
        precision, lap = self.precision, self.timer.lap
        if self._fp32:  # no autocast context to enter (0.3 µs a step)
            out = self.task.train_forward(self.model, batch)
        else:
            with precision.autocast():
                out = self.task.train_forward(self.model, batch)
        lap("forward")
        if first:
            self.algorithm.zero_grad(self.optimizer)
        if self._global:
            precision.backward(out.loss * out.units)
        else:
            precision.backward(out.loss / micro_batches)
        lap("backward")
        return out

    def _train_step(self, batches: Any, steps_per_epoch: int, epoch_index: int, i: int) -> bool:
        """One optimizer step; returns True when it was the epoch's last (the loader is done).

        Hot path: on task 2a a step is 0.13–0.45 ms, so every call and attribute read here shows
        in P1 (benchmarks/harness_overhead.py). What is fixed for the run — precision, clipping,
        normalisation, whether the scheme overlaps — is read once in :meth:`run` (``self._fp32``,
        ...), and the hooks a configuration cannot need (fp16 unscaling in fp32, an overlapping
        scheme's exposed wait) are not called.
        """
        timer, model, algo = self.timer, self.model, self.algorithm
        lap = timer.lap
        timer.step_start()
        if self._plain:  # one fp32 micro-batch, per-rank mean: nothing more on the hot path
            batch = self._ahead if self._ahead is not None else next(batches, None)
            if batch is None:
                raise ValueError("the training loader yielded no batch in this epoch")
            self._ahead = next(batches, None)
            lap("data")
            out = self.task.train_forward(model, batch)
            lap("forward")
            algo.zero_grad(self.optimizer)
            out.loss.backward()
            lap("backward")
            units, lr_factor = out.units, out.lr_factor
            counted = out.counted or units
            step_loss: Any = out.loss.item() if self._loss_on_host else out.loss.detach()
        else:
            group = self._ahead if self._ahead is not None else self._fetch(batches)
            if group is None:
                raise ValueError("the training loader yielded no batch in this epoch")
            self._ahead = self._fetch(batches)
            lap("data")
            n_micro = len(group)
            units, counted, lr_factor, step_loss = 0, 0, 0.0, 0.0
            for m, batch in enumerate(group):
                with algo.no_sync() if m < n_micro - 1 else contextlib.nullcontext():
                    out = self._micro(batch, n_micro, m == 0)
                units += out.units
                counted += out.counted or out.units
                lr_factor += out.lr_factor / n_micro
                loss = out.loss.item() if self._loss_on_host else out.loss.detach()
                step_loss = step_loss + loss / n_micro
        if self._overlaps:
            # an overlapping scheme's wait for communication inside backward is communication
            exposed = algo.exposed_in_backward()
            if exposed:
                timer.move("backward", "communication", exposed)
        skip = False if self._fp32 else self.precision.unscale_and_check(model)
        if self._global:
            scale = self._global_scale(units)
            if not self._overlaps:
                self._scale_grads(scale)  # before the reduction: compressors see the final grad
        # an overflow step (agreed by all ranks) must not feed inf into error-feedback
        # memories; overlapping schemes still collect their in-flight collectives
        if not skip or self._overlaps:
            algo.reduce_gradients(model)
        if self._global and self._overlaps:
            self._scale_grads(scale)  # already reduced: a linear average, so the same result
        lap("communication")
        if self._clip is not None and not skip:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self._clip)
        # a schedule that counts applied updates (4a/4b) does not advance on a skipped step
        self.schedule.on_step(
            self.step - self.precision.skipped_steps if self._applied_only else self.step
        )
        if not skip:
            if lr_factor != 1.0:
                groups = self.optimizer.param_groups
                saved = [g["lr"] for g in groups]
                for g in groups:
                    g["lr"] *= lr_factor
                self.optimizer.step()
                for g, lr in zip(groups, saved, strict=True):
                    g["lr"] = lr
            else:
                self.optimizer.step()
        if not self._fp32:
            self.precision.update(skip)
        lap("optimizer")
        algo.after_step(model)
        lap("communication")
        timer.step_end()
        if self._loss_on_host:
            self._window_loss_host += step_loss
        else:
            self._window_loss.add_(step_loss)  # on the device: no sync, no host copy
        self._window_steps += 1
        self._window_samples += counted
        self.step += 1
        last = self._ahead is None
        self.epoch = epoch_index + (1.0 if last else min((i + 1) / steps_per_epoch, 0.999999))
        self.position.current = (self.step, self.epoch)
        return last

    def _global_scale(self, units: int) -> float:
        """``train.normalize = global``: k / (units on all ranks), one all-reduce per step. The
        scheme then averages over k ranks, so the gradient is the sum over every unit divided by
        the global count — whatever each rank's share was."""
        t = torch.tensor([float(units)], device=self.dist.device)
        self.dist.all_reduce_sum(t)
        return self.dist.world_size / max(t.item(), 1.0)

    def _scale_grads(self, factor: float) -> None:
        with torch.no_grad():
            for p in self.module.parameters():
                if p.grad is not None:
                    p.grad.mul_(factor)

    def _after_step(self, epoch_index: int, end_of_epoch: bool) -> str | None:
        tc = self.cfg.train
        if self._window_steps >= tc.log_every_steps and (
            tc.log_every_seconds <= 0
            or time.perf_counter() - self._window_start >= tc.log_every_seconds
        ):
            self._flush_window()
        if not end_of_epoch and self.step < self._quiet_until and self.epoch < self._next_mark:
            return None  # the common case: three comparisons instead of every rule below
        stop = self._rules(epoch_index, end_of_epoch)
        self._plan_quiet()
        return stop

    def _plan_quiet(self) -> None:
        """The next step at which a step-counted rule (evaluation every N steps, max steps, the
        time limit's agreement) can fire, and the next evaluation mark in epochs."""
        tc, step = self.cfg.train, self.step
        due = [math.inf if tc.max_steps is None else tc.max_steps]
        if tc.eval_every_steps is not None:
            due.append((step // tc.eval_every_steps + 1) * tc.eval_every_steps)
        if tc.time_limit is not None:
            due.append((step // tc.control_every_steps + 1) * tc.control_every_steps)
        if tc.checkpoint_every_steps is not None:
            due.append((step // tc.checkpoint_every_steps + 1) * tc.checkpoint_every_steps)
        self._quiet_until = min(due)  # type: ignore[assignment]
        self._next_mark = (self._eval_marks + 1) * tc.eval_every_epochs - 1e-9

    def _rules(self, epoch_index: int, end_of_epoch: bool) -> str | None:
        """Every rule between steps but the log window: epoch end, evaluation, stop, checkpoint."""
        tc = self.cfg.train
        if end_of_epoch:
            self._flush_window()
            self.emit("event", "epoch_end", epoch_index + 1)
        due = tc.eval_every_steps is not None and self.step % tc.eval_every_steps == 0
        mark = (self._eval_marks + 1) * tc.eval_every_epochs
        if self.epoch >= mark - 1e-9:
            due = True
            while (self._eval_marks + 1) * tc.eval_every_epochs <= self.epoch + 1e-9:
                self._eval_marks += 1
        if due:
            self._flush_window()
            if self._evaluate() and tc.stop_at_goal:
                return "goal_reached"
        if tc.max_steps is not None and self.step >= tc.max_steps:
            return "max_steps"
        if (
            tc.time_limit is not None
            and (self.step % tc.control_every_steps == 0 or due or end_of_epoch)
            and self._time_is_up(tc.time_limit)
        ):
            return "time_limit"
        if (
            tc.checkpoint_every_steps is not None and self.step % tc.checkpoint_every_steps == 0
        ) or (
            tc.checkpoint_every_epochs
            and end_of_epoch
            and ((epoch_index + 1) % tc.checkpoint_every_epochs == 0)
        ):
            self._checkpoint(epoch_index, end_of_epoch)
        return None

    def _time_is_up(self, limit: float) -> bool:
        """All ranks agree: stop when the slowest-clock rank has passed the limit."""
        elapsed = time.perf_counter() - self.wall_start
        flag = torch.tensor([1.0 if elapsed >= limit else 0.0], device=self.dist.device)
        with self.timer.phase("communication"):
            self.dist.all_reduce_max(flag)
        return bool(flag.item() > 0)

    def _evaluate(self) -> bool:
        """Run validation; returns True when the goal is reached for the first time now."""
        self.module.eval()
        eval_start = time.perf_counter()
        with self.timer.phase("eval"), self.task.eval_context(self.module, self.optimizer):
            metrics = self.task.evaluate(self.module, self.val_data, self.dist)
        self.model.train()
        self._last_eval_step = self.step
        self.summary.evals += 1
        self.summary.final_metrics = metrics
        self.emit("phase", "eval", time.perf_counter() - eval_start, "s")
        for name, value in metrics.items():
            self.emit("val", name, value)
        self.schedule.on_eval(metrics["loss"], self.step)
        target = self.task.target
        s = self.summary
        if not s.goal_reached and target.reached(metrics[target.metric], self.cfg.goal):
            s.goal_reached = True
            s.time_to_target = self.timer.train_time
            s.wall_time_to_target = time.perf_counter() - self.wall_start
            s.step_at_target = self.step
            s.bytes_at_target = self.algorithm.bytes_sent
            self.emit("event", "goal_reached", metrics[target.metric])
            return True
        return False

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint(self, epoch_index: int, end_of_epoch: bool) -> None:
        """Save this step's checkpoint (:func:`mlbench.train.resume.save`); a method of its own
        by name, as the heartbeat reads ``_checkpoint`` on the stack as the checkpoint phase."""
        resume.save(self, epoch_index, end_of_epoch)


def train(
    task: Task,
    cfg: RunConfig,
    dist: DistContext,
    events: EventWriter,
    run_dir: Path,
    algorithm: type[Algorithm],
    position: LoopPosition | None = None,
    fault: Callable[[int, PhaseTimer], None] | None = None,
) -> RankSummary:
    """Train ``task`` with scheme ``algorithm`` on this rank until a stop rule fires; returns this
    rank's measurements.

    ``algorithm`` is the scheme's class, handed over by the composition root (the worker), not
    looked up here; the loop instantiates it after seeding, where its construction has always
    happened (a scheme may draw its seed from torch's). ``position``, when given, is kept at the
    current step and epoch for other threads. ``fault``, when given, is called after every step
    with the steps done and the phase timer (an injected fault, ``mlbench.train.faults``).
    """
    return _Trainer(task, cfg, dist, events, run_dir, algorithm, position, fault).run()
