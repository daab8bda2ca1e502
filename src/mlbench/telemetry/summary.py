"""What one rank measured: the record the loop (or a measurement task) fills and the launcher reads.

It lives in the bottom layer so that the loop (``train/``), measurement tasks (``tasks/``) and the
worker entry point can all import it without an upward import. Rank 0 gathers every rank's record
into result.json (``results/summary.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RankSummary:
    """What one rank measured; rank 0 gathers these into result.json."""

    rank: int
    steps: int = 0
    epochs: float = 0.0
    samples: int = 0  # units processed (the task's unit: images, samples, tokens)
    unit: str = "samples"
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
    # restarts of the run (``train/checkpoint.py``'s RestartCost dicts) and their summed cost,
    # which train_time and time_to_target include (docs/checkpoints.md)
    restarts: list[dict[str, Any]] = field(default_factory=list)
    restart_cost: float = 0.0
    # a measurement task's table (task 0a: one row per collective × dtype × size)
    measurements: list[dict[str, Any]] = field(default_factory=list)
