"""The one training loop every task and algorithm runs through.

Per step, each phase is timed by the loop's own :class:`PhaseTimer` (as laps: contiguous)::

    data → forward (incl. loss) → backward (incl. zero_grad) → communication → optimizer
         → communication (post-step hook)

Evaluation runs between steps (``eval`` phase, outside train time). The loop never branches on
world size and never holds a hyperparameter: those come from the task's config. Stopping rules
that depend on a rank-local clock (the time limit) are agreed on by a tiny max-all-reduce so all
ranks stop at the same step; the others (max steps/epochs, goal on all-reduced metrics) are
identical on every rank by construction.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlbench.dist import DistContext
from mlbench.registry import get_algorithm
from mlbench.tasks.base import RunConfig, Task
from mlbench.telemetry.events import EventWriter
from mlbench.train.precision import Precision
from mlbench.train.timer import STEP_PHASES, PhaseTimer

PROGRESS_SECONDS = 1.0  # the least time between two progress lines on a rank's stdout


@dataclass
class RankSummary:
    """What one rank measured; rank 0 gathers these into result.json."""

    rank: int
    steps: int = 0
    epochs: float = 0.0
    samples: int = 0
    train_time: float = 0.0
    wall_time: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    goal_reached: bool = False
    time_to_target: float | None = None
    wall_time_to_target: float | None = None
    step_at_target: int | None = None
    bytes_sent: int = 0
    bytes_at_target: int | None = None
    dense_bytes: int = 0  # what dense fp32 gradient all-reduce would have sent in as many steps
    collectives: int = 0
    algorithm_stats: dict[str, Any] = field(default_factory=dict)
    precision: str = "fp32"
    skipped_steps: int = 0
    loss_scale: float | None = None
    stop_reason: str = ""
    final_metrics: dict[str, float] = field(default_factory=dict)
    evals: int = 0
    lr: float = 0.0
    # a measurement task's table (task 0a: one row per collective × dtype × size)
    measurements: list[dict[str, Any]] = field(default_factory=list)


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


class _Trainer:
    def __init__(
        self,
        task: Task,
        cfg: RunConfig,
        dist: DistContext,
        events: EventWriter,
        run_dir: Path,
        position: LoopPosition | None = None,
    ) -> None:
        self.task, self.cfg, self.dist, self.events = task, cfg, dist, events
        self.run_dir = run_dir
        self.position = position if position is not None else LoopPosition()
        self.timer = PhaseTimer(dist.synchronize if dist.device.type == "cuda" else None)
        self.summary = RankSummary(rank=dist.rank)
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
        self._window_bytes = 0
        self._bytes_total = 0
        self._last_progress = -math.inf
        self._progress: str | None = None  # the latest window's line, if not printed yet
        self._last_eval_step = -1

    # ------------------------------------------------------------------ events
    def emit(self, kind: str, name: str, value: float, unit: str | None = None) -> None:
        self.events.emit(kind, name, value, step=self.step, epoch=round(self.epoch, 6), unit=unit)

    def _flush_window(self) -> None:
        if self._window_steps == 0:
            return
        phases, step_time = self.timer.take_window()
        if self._loss_on_host:
            loss = self._window_loss_host / self._window_steps
        else:
            loss = float(self._window_loss) / self._window_steps
        # A human-readable line on the rank's stdout (the dashboard's output pane, `tail -f
        # rank-0.stdout`), at most one a second and always the last: a window on task 2a lasts
        # ~5 ms, and a flushed line per window was ~200 lines/s of log and ~30 µs of system
        # call each. The numbers of record are the events below, written for every window.
        self._progress = (
            f"step {self.step} epoch {self.epoch:.2f} loss {loss:.4f} "
            f"{self._window_samples / max(step_time, 1e-12):.1f} samples/s"
        )
        now = time.monotonic()
        if now - self._last_progress >= PROGRESS_SECONDS:
            self._last_progress = now
            print(self._progress, flush=True)
            self._progress = None
        self._bytes_total += self._window_bytes
        records: list[tuple[str, str, float, str | None]] = [
            ("train", "loss", loss, None),
            ("train", "lr", self.schedule.lr, None),
            ("train", "train_time", step_time, "s"),
            ("train", "throughput", self._window_samples / max(step_time, 1e-12), "samples/s"),
            *(("phase", name, phases[name], "s") for name in STEP_PHASES),
            ("comm", "bytes_sent", float(self._window_bytes), "B"),
            ("comm", "bytes_total", float(self._bytes_total), "B"),
        ]
        if self._window_bytes > 0:
            dense = self.algorithm.dense_bytes_per_step * self._window_steps
            records.append(("comm", "compression_ratio", dense / self._window_bytes, None))
        # one write for the window (on a 0.45 ms step, 13 separate emits were ~3 % of the step)
        self.events.emit_many(records, step=self.step, epoch=round(self.epoch, 6))
        if self._loss_on_host:
            self._window_loss_host = 0.0
        else:
            self._window_loss.zero_()
        self._window_steps = self._window_samples = self._window_bytes = 0

    # ------------------------------------------------------------------ main
    def run(self) -> RankSummary:
        cfg, dist, task, timer = self.cfg, self.dist, self.task, self.timer
        tc = cfg.train
        seed_everything(cfg.seed)
        train_data, self.val_data = task.build_data(cfg, dist)
        steps_per_epoch = len(train_data)
        if steps_per_epoch == 0:
            raise ValueError("this rank's training shard is smaller than one batch")
        self.algorithm = get_algorithm(cfg.algorithm.name)(cfg.algorithm, dist)
        # ``module`` is the plain model (evaluation, checkpoints); ``model`` is what trains —
        # the same object unless the scheme wraps it (DDP)
        self.module = task.build_model(cfg).to(dist.device)
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
        self.algorithm.setup(self.model)
        setup_bytes = self.algorithm.bytes_sent

        planned = steps_per_epoch * tc.max_epochs
        if tc.max_steps is not None:
            planned = min(planned, tc.max_steps)
        self.emit("event", "steps_per_epoch", steps_per_epoch)
        self.emit("event", "planned_steps", planned)
        self.emit("event", "start", 0)

        self.wall_start = time.perf_counter()
        stop: str | None = None
        epoch_index = 0
        self.model.train()
        while stop is None:
            batches = iter(train_data)
            for i in range(steps_per_epoch):
                self._train_step(batches, steps_per_epoch, epoch_index, i)
                stop = self._after_step(steps_per_epoch, epoch_index, i)
                if stop is not None:
                    break
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
        s.bytes_sent = self.algorithm.bytes_sent - setup_bytes
        s.dense_bytes = self.algorithm.dense_bytes_per_step * self.step
        s.collectives = self.algorithm.collectives
        s.algorithm_stats = self.algorithm.stats()
        s.precision = self.precision.mode
        s.skipped_steps = self.precision.skipped_steps
        s.loss_scale = self.precision.scale if self.precision.mode == "fp16" else None
        s.lr = self.schedule.lr
        self.emit("event", "end", 1)
        return s

    def _train_step(self, batches: Any, steps_per_epoch: int, epoch_index: int, i: int) -> None:
        timer, model, algo, precision = self.timer, self.model, self.algorithm, self.precision
        lap = timer.lap
        timer.step_start()
        batch = next(batches)
        lap("data")
        if precision.mode == "fp32":  # no autocast context to enter (0.3 µs a step)
            output = model(batch[0])
            loss = self.task.loss(output, batch, model)
        else:
            with precision.autocast():
                output = model(batch[0])
                loss = self.task.loss(output, batch, model)
        lap("forward")
        bytes_before = algo.bytes_sent
        algo.zero_grad(self.optimizer)
        precision.backward(loss)
        lap("backward")
        # an overlapping scheme's wait for communication inside backward is communication
        exposed = algo.exposed_in_backward()
        if exposed:
            timer.move("backward", "communication", exposed)
        skip = precision.unscale_and_check(model)
        # an overflow step (agreed by all ranks) must not feed inf into error-feedback
        # memories; overlapping schemes still collect their in-flight collectives
        if not skip or algo.overlaps:
            algo.reduce_gradients(model)
        lap("communication")
        self.schedule.on_step(self.step)
        if not skip:
            self.optimizer.step()
        precision.update(skip)
        lap("optimizer")
        algo.after_step(model)
        lap("communication")
        timer.step_end()
        if self._loss_on_host:
            self._window_loss_host += loss.item()
        else:
            self._window_loss.add_(loss.detach())  # on the device: no sync, no host copy
        self._window_bytes += algo.bytes_sent - bytes_before
        self._window_steps += 1
        n = len(batch[1])
        self._window_samples += n
        self.summary.samples += n
        self.step += 1
        self.epoch = epoch_index + (i + 1) / steps_per_epoch
        self.position.current = (self.step, self.epoch)

    def _after_step(self, steps_per_epoch: int, epoch_index: int, i: int) -> str | None:
        tc = self.cfg.train
        if self.step % tc.log_every_steps == 0:
            self._flush_window()
        end_of_epoch = i + 1 == steps_per_epoch
        if end_of_epoch:
            self._flush_window()
            self.emit("event", "epoch_end", epoch_index + 1)
        due = (tc.eval_every_steps is not None and self.step % tc.eval_every_steps == 0) or (
            end_of_epoch and (epoch_index + 1) % tc.eval_every_epochs == 0
        )
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
            tc.checkpoint_every_epochs
            and end_of_epoch
            and ((epoch_index + 1) % tc.checkpoint_every_epochs == 0)
        ):
            self._checkpoint()
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
        with self.timer.phase("eval"):
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

    def _checkpoint(self) -> None:
        start = time.perf_counter()
        with self.timer.phase("checkpoint"):
            if self.dist.is_main:
                state = {
                    "step": self.step,
                    "model": self.module.state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "config": asdict(self.cfg),
                }
                tmp = self.run_dir / "checkpoint.pt.tmp"
                torch.save(state, tmp)
                tmp.replace(self.run_dir / "checkpoint.pt")
        self.emit("phase", "checkpoint", time.perf_counter() - start, "s")


def train(
    task: Task,
    cfg: RunConfig,
    dist: DistContext,
    events: EventWriter,
    run_dir: Path,
    position: LoopPosition | None = None,
) -> RankSummary:
    """Train ``task`` on this rank until a stop rule fires; returns this rank's measurements.

    ``position``, when given, is kept at the current step and epoch for other threads.
    """
    return _Trainer(task, cfg, dist, events, run_dir, position).run()
