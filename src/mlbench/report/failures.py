"""The cost of a failure: time to target with an injected failure against without it.

A run with ``--fault`` is its own configuration (:data:`mlbench.report.load.FAULTS` in its
config). Each such configuration is paired with its **baseline**, the configuration that is the
same in everything but the fault (same scheme, workers, checkpoint interval, ...). When the
inputs hold none, a baseline that differs only in the checkpoint interval
(``train.checkpoint_every_*``) is taken instead — preferring the one without checkpoints — and the
row says so: that lets one set of fault-free runs serve every checkpoint interval (checkpoints
are outside ``train_time``, so they change the train-time cost only by noise; they do add their
``checkpoint`` phase to the wall-clock cost).

The cost is the difference of the medians over the runs that reached the target, for train time
(``time_to_target``) and wall time (``wall_time_to_target``); the clock never pauses across a
restart (docs/timing.md), so both already hold the lost work, the downtime and the restarted
ranks' start-up. Beside it, the runs' own account of that: ``summary.restart_cost_s`` (lost train
time + downtime, the slowest rank's), its two parts, the step each restart resumed from (the
checkpoint's) and the number of restarts. A failure that ended the run
(restarts spent) makes a missed run: counted, never dropped, as everywhere in a report.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from mlbench.report.load import FAULTS, Configuration
from mlbench.results import stats

#: the config keys of the checkpoint interval (docs/checkpoints.md)
CHECKPOINT_KEYS = ("train.checkpoint_every_steps", "train.checkpoint_every_epochs")


def checkpoint_interval(config: dict[str, Any]) -> str:
    """``every 20 steps``, ``every 1 epoch``, or ``none`` (a restart starts the training over)."""
    parts = []
    steps = config.get("train.checkpoint_every_steps")
    epochs = config.get("train.checkpoint_every_epochs")
    if steps:
        parts.append(f"every {steps:g} step{'s' if steps != 1 else ''}")
    if epochs:
        parts.append(f"every {epochs:g} epoch{'s' if epochs != 1 else ''}")
    return " + ".join(parts) or "none"


def _without_checkpoints(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in CHECKPOINT_KEYS}


def baseline(
    config: Configuration, configs: Sequence[Configuration]
) -> tuple[Configuration | None, bool]:
    """The fault-free configuration ``config`` is compared with, and whether it is exact (the
    same configuration but for the fault) rather than one with another checkpoint interval."""
    want = {k: v for k, v in config.config.items() if k != FAULTS}
    candidates = [c for c in configs if FAULTS not in c.config and c.workers == config.workers]
    for c in candidates:
        if c.config == want:
            return c, True
    near = [c for c in candidates if _without_checkpoints(c.config) == _without_checkpoints(want)]
    near.sort(key=lambda c: (checkpoint_interval(c.config) != "none", c.key))
    return (near[0], False) if near else (None, False)


def _spread(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "median": None, "min": None, "max": None}
    return {
        "n": len(values),
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
    }


def _per_run(summaries: Sequence[dict[str, Any]], key: str) -> list[float]:
    """Each run's total of ``key`` over its restarts (``summary.restarts``)."""
    return [sum(float(e.get(key) or 0.0) for e in s.get("restarts") or []) for s in summaries]


def _side(config: Configuration | None, key: str) -> dict[str, Any] | None:
    if config is None:
        return None
    s = stats.summarize(config.values(key))
    return {
        "n": s.n,
        "n_reached": s.n_reached,
        "n_missed": s.n_missed,
        "values": list(s.values),
        "median": s.median,
        "min": s.minimum,
        "max": s.maximum,
    }


def _measure(base: Configuration | None, faulty: Configuration, key: str) -> dict[str, Any]:
    cost, interval, notes = (
        stats.difference(base.values(key), faulty.values(key))
        if base is not None
        else (None, None, ("no run without the fault to compare with",))
    )
    return {
        "without": _side(base, key),
        "with": _side(faulty, key),
        "cost": cost,
        "cost_interval": interval.as_dict() if interval else None,
        "notes": list(notes),
    }


def failure_costs(configs: Sequence[Configuration]) -> list[dict[str, Any]]:
    """One row per configuration with an injected fault: time to target (train and wall) with
    and without the failure, their difference (the cost of the failure) with a bootstrap interval
    of the difference of medians, and what the runs recorded of their restarts. Ordered by
    scheme, workers, fault, then checkpoint interval (steps, none last). Empty without faults."""
    rows = []
    for c in configs:
        if FAULTS not in c.config:
            continue
        base, exact = baseline(c, configs)
        results = [r.result for r in c.runs if r.result]
        summaries = [x.get("summary", {}) for x in results]
        restart_cost = [float(s["restart_cost_s"]) for s in summaries if "restart_cost_s" in s]
        restarts = [len(s.get("restarts") or []) for s in summaries]
        entries = [e for s in summaries for e in s.get("restarts") or []]
        rows.append(
            {
                "label": c.label,
                "algorithm": c.algorithm,
                "workers": c.workers,
                "faults": str(c.config[FAULTS]),
                "checkpoint": checkpoint_interval(c.config),
                "checkpoint_every_steps": c.config.get("train.checkpoint_every_steps"),
                "checkpoint_every_epochs": c.config.get("train.checkpoint_every_epochs"),
                "baseline": base.label if base else None,
                "baseline_checkpoint": checkpoint_interval(base.config) if base else None,
                "baseline_exact": exact,
                "time_to_target": _measure(base, c, "time_to_target"),
                "wall_time_to_target": _measure(base, c, "wall_time_to_target"),
                "restart_cost_s": _spread(restart_cost),
                "restarts": _spread([float(n) for n in restarts]),
                # restart_cost_s split: lost work (after the checkpoint; a failed attempt's last,
                # unflushed log window is not counted: docs/timing.md) and downtime, per run
                "lost_train_time_s": _spread(_per_run(summaries, "lost_train_time_s")),
                "downtime_s": _spread(_per_run(summaries, "downtime_s")),
                "resumed_from_step": _spread(
                    [float(e["resumed_from_step"]) for e in entries if "resumed_from_step" in e]
                ),
            }
        )

    def order(row: dict[str, Any]) -> tuple[Any, ...]:
        steps = row["checkpoint_every_steps"] or row["checkpoint_every_epochs"]
        return (row["algorithm"], row["workers"], row["faults"], steps is None, steps or 0)

    return sorted(rows, key=order)
