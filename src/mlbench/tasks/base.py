"""The task contract (DESIGN §4) and the config sections every task shares.

A task is *data plus a few builders*: hyperparameters live in the task's config defaults (never as
locals in the loop), and the loop only calls the builders. That is what lets one training loop run
every benchmark and what makes a run's "official" status a pure config comparison.

Two kinds: a training :class:`Task` (data, model, ``train_forward``, evaluation, lr schedule —
the loop owns everything else: communication, accumulation, clipping, normalisation, timing), and
a :class:`MeasurementTask` (0a) that runs its own procedure. Both share :class:`TaskBase`: the
name, the config tree, data preparation in the launcher and the spec shown to users.
"""

from __future__ import annotations

import contextlib
import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from mlbench.config import (
    BATCH_MAX,
    EPOCHS_MAX,
    SEED_MAX,
    STEPS_MAX,
    SchemeConfig,
    closed_differences,
    from_dict,
    param,
    section,
)
from mlbench.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from mlbench.data.loader import Loader
    from mlbench.dist import DistContext
    from mlbench.schedules import Schedule
    from mlbench.telemetry.events import EventWriter
    from mlbench.telemetry.summary import RankSummary


@dataclass(frozen=True)
class Target:
    """The quality goal: ``metric`` must reach ``value`` (full) or ``light_value`` (light)."""

    metric: str
    value: float
    light_value: float
    mode: Literal["max", "min"] = "max"

    def describe(self, goal: str) -> dict[str, Any]:
        """The goal as recorded in result.json (``reached`` is added from the measurements)."""
        return {
            "metric": self.metric,
            "goal": goal,
            "threshold": self.threshold(goal),
            "mode": self.mode,
        }

    def threshold(self, goal: str) -> float:
        return self.light_value if goal == "light" else self.value

    def reached(self, measured: float, goal: str) -> bool:
        limit = self.threshold(goal)
        return measured >= limit if self.mode == "max" else measured <= limit


@dataclass
class TrainConfig:
    """Stopping, evaluation and logging — the keys every task has."""

    max_epochs: int = param(1, help="stop after this many epochs", minimum=1, maximum=EPOCHS_MAX)
    max_steps: int | None = param(
        None,
        open=True,
        minimum=1,
        maximum=STEPS_MAX,
        help="stop after this many optimizer steps (all ranks)",
    )
    time_limit: float | None = param(
        None, open=True, minimum=0, help="stop after this many seconds of wall time (training+eval)"
    )
    eval_every_epochs: float = param(
        1.0,
        minimum=1e-6,
        help="evaluate every N epochs; a fraction evaluates within an epoch (0.3: every 30 %)",
    )
    eval_every_steps: int | None = param(
        None,
        minimum=1,
        maximum=STEPS_MAX,
        help="also evaluate every N steps (finer time-to-target resolution)",
    )
    stop_at_goal: bool = param(True, open=True, help="stop as soon as the goal is reached")
    log_every_steps: int = param(
        10,
        open=True,
        minimum=1,
        maximum=STEPS_MAX,
        help="a train/phase event window closes after at least N steps (and log_every_seconds)",
    )
    log_every_seconds: float = param(
        0.05,
        open=True,
        minimum=0,
        help="... and after at least this many seconds (0: by steps only, e.g. with "
        "log_every_steps=1 for an event per step). Windows measured in time keep the "
        "per-step cost of logging flat on sub-millisecond steps (2a) and change nothing on "
        "slower ones (1a: 10 steps last seconds)",
    )
    accumulate: int = param(
        1,
        minimum=1,
        maximum=BATCH_MAX,
        help="micro-batches per optimizer step; the scheme communicates only after the last",
    )
    clip_grad_norm: float | None = param(
        None,
        minimum=0,
        help="clip the gradient norm to this after the reduction (and fp16 unscale), before "
        "the step, so every rank applies the same factor",
    )
    normalize: Literal["mean", "global"] = param(
        "mean",
        help="mean: each rank's loss is its micro-batches' mean; global: gradients are divided "
        "by the global unit count (all-reduced once per step), as for token-batched tasks",
    )
    control_every_steps: int = param(
        1,
        open=True,
        minimum=1,
        maximum=STEPS_MAX,
        help="how often ranks agree on the time limit (one tiny collective)",
    )
    resource_every_seconds: float = param(
        2.0,
        open=True,
        minimum=0,
        help="each worker samples its CPU, memory, network (and GPU) as resource events "
        "every N seconds; 0 disables",
    )
    hang_timeout: float | None = param(
        180.0,
        open=True,
        minimum=0,
        help="fail the run when a rank's step count has not moved for N seconds of training "
        "(set-up, evaluation and checkpoints excluded), naming the stalled rank; below gloo's "
        "300 s collective timeout. 0 or null disables (docs/faults.md)",
    )
    checkpoint_every_epochs: int | None = param(
        None,
        open=True,
        minimum=1,
        maximum=EPOCHS_MAX,
        help="every rank saves everything an exact resume needs at the end of every N-th "
        "epoch (docs/checkpoints.md)",
    )
    checkpoint_every_steps: int | None = param(
        None,
        open=True,
        minimum=1,
        maximum=STEPS_MAX,
        help="... and every N optimizer steps (mid-epoch resumes are exact too)",
    )
    precision: Literal["fp32", "fp16", "bf16"] = param(
        "fp32",
        open=True,
        help="fp16: autocast + dynamic loss scaling, fp32 master weights; bf16: autocast. Open, "
        "as in MLPerf's closed division: the numeric format is the runner's choice and the "
        "quality goal judges it (a run that converges worse reaches its goal later)",
    )
    channels_last: bool = param(
        False,
        open=True,
        help="the model's 4-D weights and 4-D input batches in channels-last (NHWC) memory "
        "format: faster convolutions on tensor-core GPUs; the same math (a convolution may sum in "
        "another order)",
    )
    loss_scale_init: float = param(2.0**16, minimum=1, help="fp16: initial loss scale")
    loss_scale_window: int = param(
        2000,
        minimum=1,
        maximum=STEPS_MAX,
        help="fp16: overflow-free steps before the scale doubles",
    )
    loss_scale_max: float = param(2.0**24, minimum=1, help="fp16: largest loss scale")


@dataclass
class DataConfig:
    """Dataset selection and batching — the keys every task has."""

    dataset: str = param("", help="dataset name")
    dir: str | None = param(None, open=True, help="root directory holding the dataset files")
    download: bool = param(True, open=True, help="download from the official URL when absent")
    batch_size: int = param(32, minimum=1, maximum=BATCH_MAX, help="training batch size per worker")
    val_batch_size: int = param(
        32, minimum=1, maximum=BATCH_MAX, help="validation batch size per worker"
    )
    train_samples: int | None = param(
        None,
        minimum=1,
        maximum=STEPS_MAX,
        help="use only the first N training samples (non-official)",
    )
    val_samples: int | None = param(
        None,
        minimum=1,
        maximum=STEPS_MAX,
        help="use only the first N validation samples (non-official)",
    )


def seed_param(default: int) -> Any:
    """The ``seed`` key. Open: MLPerf's rules vary the seed from run to run, and a benchmark's
    repeats (``mlbench sweep --repeats``) must stay official; the seed is recorded either way."""
    return param(
        default,
        open=True,
        minimum=-SEED_MAX,
        maximum=SEED_MAX,
        help="random seed (model init, shards, shuffling, augmentation); open: repeats vary it",
    )


@dataclass
class RunConfig:
    """Root of every task's config tree. Tasks subclass it to set their defaults."""

    task: str = param("", help="task name")
    seed: int = seed_param(42)
    goal: Literal["full", "light"] = param("full", open=True, help="which target to stop at")
    train: TrainConfig = section(TrainConfig)
    data: DataConfig = section(DataConfig)
    #: the scheme's section: :class:`SchemeConfig` until the config is resolved, then the
    #: scheme's own subclass (``Algorithm.config_cls``), chosen from ``algorithm.name``
    algorithm: SchemeConfig = section(SchemeConfig)


@dataclass(frozen=True)
class DataInfo:
    """What the launcher learns about the data before starting workers (no torch needed).

    ``issues``: reasons the data found departs from the official dataset (a subset, another
    dataset); they make the run non-official.
    """

    train_size: int
    val_size: int
    description: str
    issues: tuple[str, ...] = ()


@dataclass
class TaskData:
    """What ``build_data`` gives the loop: this rank's loaders and the facts the model needs
    (vocabulary size, feature count) — passed on to ``build_model`` instead of through ``self``.

    ``recorded``: values the task resolved on this rank that the config file does not show
    (1b: the batch size ``0`` = auto became on this device); the loop writes each as an
    ``event`` record at the start of training, so the run's events say what actually ran."""

    train: Loader
    val: Any
    facts: dict[str, Any] = field(default_factory=dict)
    recorded: dict[str, float] = field(default_factory=dict)


@dataclass
class StepOut:
    """One micro-batch's forward result.

    ``loss`` is the mean over the micro-batch's ``units`` (images, samples, target tokens);
    ``lr_factor`` multiplies this step's lr (3a: sequence length / 70). Extra named values a task
    wants logged go in ``extra`` (mean over the window). ``counted``: what throughput counts
    (the task's ``unit``) when it differs from the units the loss is normalised by — 4a
    averages over sentences but reports target tokens/s; None: ``units``.
    """

    loss: torch.Tensor
    units: int
    lr_factor: float = 1.0
    extra: dict[str, float] | None = None
    counted: int | None = None


class TaskBase(ABC):
    """What every task has: identity, config tree, data preparation in the launcher, the spec."""

    name: ClassVar[str]
    task_id: ClassVar[str]
    title: ClassVar[str]
    dataset: ClassVar[str]
    model: ClassVar[str]
    target: ClassVar[Target]
    config_cls: ClassVar[type[RunConfig]]
    #: the unit throughput is counted in (result.json, CLI, dashboard): "images", "tokens", ...
    unit: ClassVar[str] = "samples"
    #: option defaults this task's spec gives schemes that have the option (2a: averaging
    #: weights, ``{"mode": "weights"}``); applied when the scheme's section is built
    scheme_defaults: ClassVar[dict[str, Any]] = {}
    #: documented departures from the original MLBench, each a sentence that says why (shown by
    #: ``mlbench tasks --show`` and in docs/tasks.md); a plug-in task with no original leaves it
    #: empty
    deviations: ClassVar[tuple[str, ...]] = ()

    def default_config(self) -> RunConfig:
        return self.config_cls(task=self.name)

    def with_scheme(self, cfg: RunConfig, name: str, section_cls: type[SchemeConfig]) -> RunConfig:
        """``cfg`` with its ``algorithm`` section replaced by ``section_cls``'s defaults (named
        ``name``), the task's ``scheme_defaults`` applied where the scheme has the option."""
        known = {f.name for f in dataclasses.fields(section_cls)}
        defaults = {k: v for k, v in self.scheme_defaults.items() if k in known}
        section_cfg = from_dict(section_cls, {**defaults, "name": name}, prefix="algorithm.")
        return dataclasses.replace(cfg, algorithm=section_cfg)

    def describe_goal(self, cfg: RunConfig) -> dict[str, Any]:
        """The goal as result.json records it. Tasks whose metric needs more to be comparable
        add it here (4a/4b: the sacrebleu signature)."""
        return self.target.describe(cfg.goal)

    def loader_threads(self, cfg: RunConfig, on_gpu: bool) -> int:
        """CPU threads each rank's input pipeline runs beside the rank's own (loader processes
        × their threads). The launcher's core budget counts them, so that a benchmark never
        time-slices its training threads against its own decoders; 0 for in-memory data."""
        return 0

    @staticmethod
    def data_root(cfg: RunConfig) -> Path:
        if not cfg.data.dir:
            raise ConfigError("data.dir is not set (use --data-dir DIR)")
        return Path(cfg.data.dir).expanduser()

    def official_differences(self, cfg: RunConfig) -> list[str]:
        """Closed-division keys where ``cfg`` departs from the spec (empty = official).

        A scheme's options are compared with that scheme's defaults (as this task sets them), so
        a PowerSGD run lists ``algorithm.name`` plus the PowerSGD options it changed.
        """
        spec = self.default_config()
        default_name = spec.algorithm.name
        spec = self.with_scheme(spec, cfg.algorithm.name, type(cfg.algorithm))
        out = closed_differences(cfg, spec)
        if cfg.algorithm.name != default_name:
            out.insert(0, "algorithm.name")
        return out

    def validate(self, cfg: RunConfig, world_size: int) -> None:
        """Task-level checks before any process starts (the scheme's own checks run beside
        these in ``runs.validate_run``, the composition root)."""
        if cfg.task != self.name:
            raise ConfigError(f"task: config is for {cfg.task!r}, not {self.name!r}")

    # --- run in the launcher (no torch import): locate, download, verify -----------------------
    @abstractmethod
    def prepare_data(self, cfg: RunConfig) -> DataInfo: ...

    def spec(self, cfg: RunConfig | None = None) -> dict[str, Any]:
        """Everything a user needs to know about the task, generated from the code.

        ``cfg``: a resolved config (its scheme's options are listed too); default: the task's
        own defaults without a resolved scheme section.
        """
        from mlbench.config import flat_items

        return {
            "name": self.name,
            "id": self.task_id,
            "title": self.title,
            "dataset": self.dataset,
            "model": self.model,
            "unit": self.unit,
            "kind": "measurement" if isinstance(self, MeasurementTask) else "training",
            "target": dataclasses.asdict(self.target),
            "deviations": list(self.deviations),
            "config": [
                {
                    "key": k,
                    "default": v,
                    "open": bool(f.metadata.get("open")),
                    "help": f.metadata.get("help", ""),
                }
                for k, v, f in flat_items(cfg if cfg is not None else self.default_config())
            ],
        }


class Task(TaskBase):
    """A training task. The loop calls, per rank::

    data = build_data(cfg, dist)                 # loaders + facts
    model = build_model(cfg, data.facts)
    optimizer = build_optimizer(cfg, model, k); schedule = build_schedule(...)
    every epoch: start_epoch(e); for batch in data.train: out = train_forward(model, batch)
    with eval_context(model, optimizer): evaluate(model, data.val, dist)
    """

    # --- run in every worker ---------------------------------------------------------------------
    @abstractmethod
    def build_data(self, cfg: RunConfig, dist: DistContext) -> TaskData: ...

    @abstractmethod
    def build_model(self, cfg: RunConfig, facts: dict[str, Any]) -> torch.nn.Module: ...

    @abstractmethod
    def build_optimizer(
        self, cfg: RunConfig, model: torch.nn.Module, world_size: int
    ) -> torch.optim.Optimizer: ...

    @abstractmethod
    def build_schedule(
        self,
        cfg: RunConfig,
        optimizer: torch.optim.Optimizer,
        world_size: int,
        steps_per_epoch: int,
        lr_scale: float = 1.0,
    ) -> Schedule:
        """The lr schedule; every lr it sets (incl. the minimum) is multiplied by ``lr_scale``."""

    def accumulation(self, cfg: RunConfig, world_size: int) -> int:
        """Micro-batches per optimizer step on ``world_size`` ranks. Default:
        ``train.accumulate``. Tasks whose spec fixes the *global* batch (4a: 2,048 sentences
        with at most 128 per worker; 4b: 2^17 tokens) derive it from ``k`` instead, so one
        config means the same optimisation on every worker count."""
        return cfg.train.accumulate

    def train_forward(self, model: torch.nn.Module, batch: Any) -> StepOut:
        """One micro-batch: forward and loss. Default: ``model(batch[0])``, :meth:`loss`, units
        = rows. Tasks with carried state (an LSTM's hidden state) override it and keep the state
        themselves (detached here each step, reset in :meth:`start_epoch`)."""
        output = model(batch[0])
        return StepOut(self.loss(output, batch, model), len(batch[1]))

    def loss(self, output: torch.Tensor, batch: Any, model: torch.nn.Module) -> torch.Tensor:
        """Training loss for the default :meth:`train_forward`. ``model`` is passed for terms on
        the weights (2a's L2 penalty)."""
        raise NotImplementedError(f"{self.name}: override loss() or train_forward()")

    def start_epoch(self, epoch: int) -> None:
        """Before epoch ``epoch`` (0-based) starts: reset carried state. Default: nothing."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """State this task carries from one step to the next (an LSTM's hidden state), for a
        checkpoint. Default: none. Loaded by :meth:`load_state_dict` after :meth:`start_epoch`
        of the epoch the run resumes in, just before its next step."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None

    def eval_context(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer
    ) -> contextlib.AbstractContextManager[None]:
        """Evaluate on other weights (averaged SGD swaps them in and back). Default: as is."""
        return contextlib.nullcontext()

    @abstractmethod
    def evaluate(self, model: torch.nn.Module, val: Any, dist: DistContext) -> dict[str, float]:
        """Global validation metrics (all-reduced over ranks); must include ``loss``."""


class MeasurementTask(TaskBase):
    """A task that measures instead of training (0a): workers call :meth:`measure`."""

    @abstractmethod
    def measure(
        self, cfg: RunConfig, dist: DistContext, events: EventWriter, run_dir: Path
    ) -> RankSummary:
        """The whole procedure on one rank."""
