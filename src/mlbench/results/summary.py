"""The run summary, ``result.json`` (DESIGN §4): versioned, with migrations for older versions.

Aggregation rules (docs/timing.md explains them to users):

* time-to-target and train/wall times are the **slowest rank's** clocks;
* per-phase totals are reported per rank and for the slowest rank (by train time);
* throughput is all ranks' training samples divided by the slowest rank's train time;
* bytes are summed over ranks (payload bytes handed to collectives);
* ``stragglers`` compares the ranks' compute per step (:func:`stragglers`).
* restarts (``mlbench run --resume``, engine restarts): one entry per restart with the largest
  lost work and downtime any rank saw, and ``restart_cost_s``, the slowest rank's total — the
  part of ``train_time`` and ``time_to_target`` the restarts cost (docs/checkpoints.md). Both
  are absent from results written before checkpoints existed: readers take ``[]`` and 0.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
RESULT_FILE = "result.json"

#: a rank computing this many times the median rank's compute per step is flagged a straggler
STRAGGLER_RATIO = 1.5
#: the step phases a rank spends on its own (all but communication, where it waits for peers)
_COMPUTE = ("data", "forward", "backward", "optimizer")

# version → function upgrading a dict of that version to version+1
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def _max_or_none(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _ratio(dense: float, sent: float) -> float | None:
    return dense / sent if sent > 0 and dense > 0 else None


def stragglers(ranks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The slowest rank's compute per step over the median rank's (None below two ranks).

    Why compute and not step time: in a synchronous scheme every rank's step lasts as long as
    the slowest one's — the others wait in communication — so step times are alike and only the
    time a rank spends on its own (data, forward, backward, optimizer) tells the straggler
    apart. The median is the lower median, so with two ranks the ratio is slow ÷ fast.
    """
    per_step = {
        int(r["rank"]): sum(float(r.get("phases", {}).get(p, 0.0)) for p in _COMPUTE) / r["steps"]
        for r in ranks
        if r.get("steps")
    }
    if len(per_step) < 2:
        return None
    slowest = max(per_step, key=lambda k: per_step[k])
    median = statistics.median_low(per_step.values())
    ratio = per_step[slowest] / median if median > 0 else None
    return {
        "ratio": ratio,
        "slowest_rank": slowest,
        "compute_per_step": {str(k): v for k, v in sorted(per_step.items())},
        "threshold": STRAGGLER_RATIO,
        "flagged": ratio is not None and ratio >= STRAGGLER_RATIO,
    }


def _restarts(ranks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every rank's restart entries merged per attempt: the worst rank's lost work/downtime."""
    merged: dict[int, dict[str, Any]] = {}
    for rank in ranks:
        for entry in rank.get("restarts") or []:
            have = merged.setdefault(entry["attempt"], dict(entry))
            for key in ("lost_steps", "lost_train_time_s", "downtime_s"):
                have[key] = max(have[key], entry[key])
    return [merged[a] for a in sorted(merged)]


def aggregate_ranks(ranks: list[dict[str, Any]]) -> dict[str, Any]:
    """Run-level numbers from per-rank summaries."""
    if not ranks:
        return {"slowest_rank": None, "phases_slowest": {}}
    slowest = max(ranks, key=lambda r: r.get("train_time", 0.0))
    train_time = slowest.get("train_time", 0.0)
    samples = sum(r.get("samples", 0) for r in ranks)
    reached = all(r.get("goal_reached") for r in ranks)
    return {
        "slowest_rank": slowest["rank"],
        "steps": slowest.get("steps"),
        "epochs": slowest.get("epochs"),
        "samples": samples,
        "train_time": train_time,
        "wall_time": max(r.get("wall_time", 0.0) for r in ranks),
        "throughput": samples / train_time if train_time > 0 else None,
        # the task's unit (images, samples, tokens): throughput is units per second
        "unit": slowest.get("unit", "samples"),
        "throughput_unit": f"{slowest.get('unit', 'samples')}/s",
        "phases_slowest": slowest.get("phases", {}),
        "goal_reached": reached,
        "time_to_target": _max_or_none([r.get("time_to_target") for r in ranks])
        if reached
        else None,
        "wall_time_to_target": _max_or_none([r.get("wall_time_to_target") for r in ranks])
        if reached
        else None,
        "bytes_sent": sum(r.get("bytes_sent", 0) for r in ranks),
        "bytes_per_step": (
            sum(r.get("bytes_sent", 0) for r in ranks) / slowest["steps"]
            if slowest.get("steps")
            else None
        ),
        "compression_ratio": _ratio(
            sum(r.get("dense_bytes", 0) for r in ranks), sum(r.get("bytes_sent", 0) for r in ranks)
        ),
        "step_time": train_time / slowest["steps"] if slowest.get("steps") else None,
        "exposed_communication_per_step": (
            slowest.get("phases", {}).get("communication", 0.0) / slowest["steps"]
            if slowest.get("steps")
            else None
        ),
        "skipped_steps": max((r.get("skipped_steps", 0) for r in ranks), default=0),
        "bytes_to_target": sum(r.get("bytes_at_target") or 0 for r in ranks) if reached else None,
        "stop_reason": slowest.get("stop_reason"),
        "stragglers": stragglers(ranks),
        "restarts": _restarts(ranks),
        "restart_cost_s": max((r.get("restart_cost", 0.0) for r in ranks), default=0.0),
        "final_metrics": ranks[0].get("final_metrics", {}),
        # a measurement task's table (times are already max-reduced over ranks, so rank 0's)
        **({"measurements": ranks[0]["measurements"]} if ranks[0].get("measurements") else {}),
    }


def build_result(
    *,
    run_id: str,
    task: str,
    state: str,
    config: dict[str, Any],
    official: bool,
    official_differences: list[str],
    environment: dict[str, Any],
    world_size: int,
    backend: str | None,
    algorithm: str,
    goal: dict[str, Any],
    ranks: list[dict[str, Any]],
    reason: str | None = None,
) -> dict[str, Any]:
    agg = aggregate_ranks(ranks)
    goal = dict(goal, reached=bool(agg.get("goal_reached")))
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "task": task,
        "state": state,
        "reason": reason,
        "official": official,
        "official_differences": official_differences,
        "world_size": world_size,
        "backend": backend,
        "algorithm": algorithm,
        "goal": goal,
        "summary": {k: v for k, v in agg.items() if k != "goal_reached"},
        "ranks": ranks,
        "config": config,
        "environment": environment,
    }


def write_result(run_dir: Path, result: dict[str, Any]) -> Path:
    """Atomic write: readers never see a half-written result.json."""
    path = Path(run_dir) / RESULT_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def migrate(result: dict[str, Any]) -> dict[str, Any]:
    version = result.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"result has no valid schema_version ({version!r})")
    if version > SCHEMA_VERSION:
        raise ValueError(
            f"result schema_version {version} is newer than this mlbench ({SCHEMA_VERSION})"
        )
    while version < SCHEMA_VERSION:
        if version not in MIGRATIONS:
            raise ValueError(f"no migration from result schema_version {version}")
        result = MIGRATIONS[version](result)
        version = result["schema_version"]
    return result


def load_result(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / RESULT_FILE
    return migrate(json.loads(path.read_text()))
