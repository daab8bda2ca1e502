"""The task contract (DESIGN §4) and the config sections every task shares.

A task is *data plus a few builders*: hyperparameters live in the task's config defaults (never as
locals in the loop), and the loop only calls the builders. That is what lets one training loop run
every benchmark and what makes a run's "official" status a pure config comparison.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from mlbench.config import closed_differences, param, section
from mlbench.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from mlbench.data.loader import BatchLoader
    from mlbench.dist import DistContext
    from mlbench.telemetry.events import EventWriter
    from mlbench.train.loop import RankSummary
    from mlbench.train.schedule import LRSchedule


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

    max_epochs: int = param(1, help="stop after this many epochs", minimum=1)
    max_steps: int | None = param(
        None, open=True, minimum=1, help="stop after this many optimizer steps (all ranks)"
    )
    time_limit: float | None = param(
        None, open=True, minimum=0, help="stop after this many seconds of wall time (training+eval)"
    )
    eval_every_epochs: int = param(1, minimum=1, help="evaluate every N epochs")
    eval_every_steps: int | None = param(
        None, minimum=1, help="also evaluate every N steps (finer time-to-target resolution)"
    )
    stop_at_goal: bool = param(True, open=True, help="stop as soon as the goal is reached")
    log_every_steps: int = param(10, open=True, minimum=1, help="train/phase events every N steps")
    control_every_steps: int = param(
        1,
        open=True,
        minimum=1,
        help="how often ranks agree on the time limit (one tiny collective)",
    )
    resource_every_seconds: float = param(
        2.0,
        open=True,
        minimum=0,
        help="each worker samples its CPU, memory, network (and GPU) as resource events "
        "every N seconds; 0 disables",
    )
    checkpoint_every_epochs: int | None = param(
        None, open=True, minimum=1, help="rank 0 saves model+optimizer every N epochs"
    )
    precision: Literal["fp32", "fp16", "bf16"] = param(
        "fp32",
        help="fp16: autocast + dynamic loss scaling, fp32 master weights; bf16: autocast",
    )
    loss_scale_init: float = param(2.0**16, minimum=1, help="fp16: initial loss scale")
    loss_scale_window: int = param(
        2000, minimum=1, help="fp16: overflow-free steps before the scale doubles"
    )
    loss_scale_max: float = param(2.0**24, minimum=1, help="fp16: largest loss scale")


@dataclass
class DataConfig:
    """Dataset selection and batching — the keys every task has."""

    dataset: str = param("", help="dataset name")
    dir: str | None = param(None, open=True, help="root directory holding the dataset files")
    download: bool = param(True, open=True, help="download from the official URL when absent")
    batch_size: int = param(32, minimum=1, help="training batch size per worker")
    val_batch_size: int = param(32, minimum=1, help="validation batch size per worker")
    train_samples: int | None = param(
        None, minimum=1, help="use only the first N training samples (non-official)"
    )
    val_samples: int | None = param(
        None, minimum=1, help="use only the first N validation samples (non-official)"
    )


@dataclass
class AlgorithmConfig:
    """Which communication scheme runs, and its options (one flat, typed section for all schemes).

    Each option names the schemes that read it; the others ignore it. Scheme-specific checks run
    in the scheme's ``check_config`` before any process starts.
    """

    name: str = param("allreduce", help="communication scheme (see docs/algorithms.md)")
    mode: Literal["gradients", "weights"] = param(
        "gradients", help="allreduce/ddp: average gradients (before the step) or weights (after)"
    )
    bucket_mb: float = param(
        25.0, open=True, minimum=0.001, help="allreduce/adam/ddp: flattened bucket size in MB"
    )
    per_layer: bool = param(
        False, open=True, help="allreduce/adam: one collective per parameter tensor, no buckets"
    )
    overlap: bool = param(
        False,
        open=True,
        help="allreduce/adam: start each gradient's all-reduce from a backward hook (async)",
    )
    adam_lr: float = param(1e-3, minimum=0, help="adam: learning rate (scaled like the task's)")
    adam_betas: tuple[float, ...] = param((0.9, 0.999), help="adam: (beta1, beta2)")
    adam_eps: float = param(1e-8, minimum=0, help="adam: epsilon")
    adam_weight_decay: float = param(
        0.0, minimum=0, help="adam: L2 weight decay (torch.optim.Adam)"
    )
    rank: int = param(2, help="powersgd: rank r of the low-rank approximation")
    warm_start: bool = param(True, help="powersgd: reuse Q from the previous step")
    min_compression_rate: float = param(
        2.0, minimum=1.0, help="powersgd: compress a matrix only if it saves at least this factor"
    )
    start_iter: int = param(
        2,
        minimum=1,
        help="powersgd: plain all-reduce before this step (torch's start_powerSGD_iter)",
    )
    ddp_hook: Literal["none", "powersgd"] = param(
        "none", help="ddp: communication hook (powersgd uses rank/warm_start/... above)"
    )
    topology: Literal["ring", "torus", "exponential", "complete", "custom"] = param(
        "ring", help="gossip: communication graph"
    )
    mixing_matrix: str | None = param(
        None, help="gossip: JSON list of rows (or a .json file) when topology = custom"
    )
    fraction: float = param(0.01, help="topk/randomk: fraction of gradient entries sent, in (0, 1]")
    error_feedback: bool = param(True, help="topk/randomk/signsgd(ef): keep the residual memory")
    sign_variant: Literal["ef", "majority"] = param(
        "ef", help="signsgd: scaled sign with error feedback, or majority vote"
    )
    local_steps: int = param(4, help="localsgd: H local steps between model averages")


@dataclass
class RunConfig:
    """Root of every task's config tree. Tasks subclass it to set their defaults."""

    task: str = param("", help="task name")
    seed: int = param(42, help="random seed (model init, shards, shuffling, augmentation)")
    goal: Literal["full", "light"] = param("full", open=True, help="which target to stop at")
    train: TrainConfig = section(TrainConfig)
    data: DataConfig = section(DataConfig)
    algorithm: AlgorithmConfig = section(AlgorithmConfig)


@dataclass(frozen=True)
class DataInfo:
    """What the launcher learns about the data before starting workers (no torch needed)."""

    train_size: int
    val_size: int
    description: str


class Task(ABC):
    """One benchmark task. Subclasses set the class attributes and implement the builders."""

    name: ClassVar[str]
    task_id: ClassVar[str]
    title: ClassVar[str]
    dataset: ClassVar[str]
    model: ClassVar[str]
    target: ClassVar[Target]
    config_cls: ClassVar[type[RunConfig]]
    #: True for a measurement task (0a): workers call ``measure`` instead of the training loop
    measures: ClassVar[bool] = False

    def default_config(self) -> RunConfig:
        return self.config_cls(task=self.name)

    @staticmethod
    def data_root(cfg: RunConfig) -> Path:
        if not cfg.data.dir:
            raise ConfigError("data.dir is not set (use --data-dir DIR)")
        return Path(cfg.data.dir).expanduser()

    def official_differences(self, cfg: RunConfig) -> list[str]:
        """Closed-division keys where ``cfg`` departs from the spec (empty = official)."""
        return closed_differences(cfg, self.default_config())

    def validate(self, cfg: RunConfig, world_size: int) -> None:
        """Reject configs that cannot run, before any process starts."""
        if cfg.task != self.name:
            raise ConfigError(f"task: config is for {cfg.task!r}, not {self.name!r}")

    # --- run in the launcher (no torch import): locate, download, verify -----------------------
    @abstractmethod
    def prepare_data(self, cfg: RunConfig) -> DataInfo: ...

    def official_data_issues(self, cfg: RunConfig, info: DataInfo) -> list[str]:
        """Reasons the *data found* departs from the spec (e.g. a subset of epsilon)."""
        return []

    # --- run in every worker ---------------------------------------------------------------------
    @abstractmethod
    def build_data(self, cfg: RunConfig, dist: DistContext) -> tuple[BatchLoader, BatchLoader]: ...

    @abstractmethod
    def build_model(self, cfg: RunConfig) -> torch.nn.Module: ...

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
    ) -> LRSchedule:
        """The lr schedule; every lr it sets (incl. the minimum) is multiplied by ``lr_scale``."""

    @abstractmethod
    def loss(
        self, output: torch.Tensor, batch: tuple[torch.Tensor, ...], model: torch.nn.Module
    ) -> torch.Tensor:
        """Training loss. ``model`` is passed for terms on the weights (2a's L2 penalty)."""

    @abstractmethod
    def evaluate(
        self, model: torch.nn.Module, val: BatchLoader, dist: DistContext
    ) -> dict[str, float]:
        """Global validation metrics (all-reduced over ranks); must include ``loss``."""

    def measure(
        self, cfg: RunConfig, dist: DistContext, events: EventWriter, run_dir: Path
    ) -> RankSummary:
        """A measurement task's whole procedure on one rank (only when ``measures``)."""
        raise NotImplementedError(f"{self.name} is a training task")

    def spec(self) -> dict[str, Any]:
        """Everything a user needs to know about the task, generated from the code."""
        from mlbench.config import flat_items

        return {
            "name": self.name,
            "id": self.task_id,
            "title": self.title,
            "dataset": self.dataset,
            "model": self.model,
            "target": dataclasses.asdict(self.target),
            "config": [
                {
                    "key": k,
                    "default": v,
                    "open": bool(f.metadata.get("open")),
                    "help": f.metadata.get("help", ""),
                }
                for k, v, f in flat_items(self.default_config())
            ],
        }
