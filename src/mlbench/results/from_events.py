"""Per-rank summaries rebuilt from event files — for runs that failed before writing a result.

A resumed run's file holds every attempt (docs/checkpoints.md): the steps a failed attempt did
after its last checkpoint appear twice, as the lost work and as the redo. Here the last attempt's
records win: at each ``resume`` marker (value: the checkpoint's step) the earlier records of later
steps are dropped, and the restarts' recorded cost (``restart_cost``) is added to ``train_time``,
which is what the loop's own summary reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlbench.attempts import read_restarts
from mlbench.telemetry.events import events_path, read_events
from mlbench.train.checkpoint import attempt_segments, recorded_restart
from mlbench.train.timer import PHASES

#: the kinds whose records describe steps (dropped when a later attempt redoes the step)
_PER_STEP = frozenset({"train", "val", "phase", "comm"})


def rank_summary_from_events(run_dir: Path, rank: int) -> dict[str, Any] | None:
    records = read_events(events_path(run_dir, rank))
    if not records:
        return None
    phases = dict.fromkeys(PHASES, 0.0)
    summary: dict[str, Any] = {
        "rank": rank,
        "steps": 0,
        "epochs": 0.0,
        "train_time": 0.0,
        "samples": 0,
        "bytes_sent": 0,
        "final_metrics": {},
    }
    kept: list[dict[str, Any]] = []
    restart_cost = 0.0
    for r in records:
        if r["kind"] == "event" and r["name"] == "resume":
            kept = [k for k in kept if k["step"] <= r["step"]]
            # where the run stands: the checkpoint's step, whatever the lost attempt reached
            summary["steps"], summary["epochs"] = r["step"], r["epoch"]
            continue
        # every record's step counts (a failed run's resource samples say how far it got)
        summary["steps"] = max(summary["steps"], r["step"])
        summary["epochs"] = max(summary["epochs"], r["epoch"])
        if r["kind"] == "event" and r["name"] == "restart_cost":
            restart_cost += r["value"] or 0.0
        elif r["kind"] in _PER_STEP:
            kept.append(r)
    window_time = 0.0
    for r in kept:
        value = r["value"] if r["value"] is not None else 0.0
        if r["kind"] == "phase" and r["name"] in phases:
            phases[r["name"]] += value
        elif r["kind"] == "train" and r["name"] == "train_time":
            summary["train_time"] += value
            window_time = value
        elif r["kind"] == "train" and r["name"] == "throughput":
            summary["samples"] += round(value * window_time)
        elif r["kind"] == "comm" and r["name"] == "bytes_sent":
            summary["bytes_sent"] += int(value)
        elif r["kind"] == "val":
            summary["final_metrics"][r["name"]] = r["value"]
    summary["phases"] = phases
    summary["train_time"] += restart_cost
    summary["restart_cost"] = restart_cost
    restarts = read_restarts(run_dir)
    segments = attempt_segments(records)
    summary["restarts"] = [
        recorded_restart(segments[a], restarts[a - 1]).as_dict()
        for a in sorted(segments)
        if 1 <= a <= len(restarts)
    ]
    # the training loop's records span the run; resource samples start before data loading and
    # end after the last record, which is not what wall_time covers
    timed = [r for r in records if r["kind"] != "resource"] or records
    summary["wall_time"] = timed[-1]["time"] - timed[0]["time"]
    return summary


def ranks_from_events(run_dir: Path, world_size: int) -> list[dict[str, Any]]:
    return [s for s in (rank_summary_from_events(run_dir, r) for r in range(world_size)) if s]
