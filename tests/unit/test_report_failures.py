"""report: a run with ``--fault`` is its own configuration, paired with the same configuration
without the fault; the cost of a failure is the difference of the medians (train and wall time to
target), shown beside the runs' own ``restart_cost_s`` (report/failures.py)."""

from __future__ import annotations

import re
import statistics
from pathlib import Path
from typing import Any

import pytest

from mlbench.report import figures
from mlbench.report.failures import failure_costs
from mlbench.report.html import _failures_table
from mlbench.report.load import Run, group

KILL = "kill:rank=1,step=150"


def _run(
    i: int,
    algorithm: str,
    every: int | None,
    ttt: float | None,
    *,
    fault: bool = False,
    restart_cost: float = 0.0,
) -> Run:
    """A synthetic run of 2a: ``ttt`` its time to target (None: missed), wall = ttt + 0.1."""
    summary: dict[str, Any] = {
        "time_to_target": ttt,
        "wall_time_to_target": None if ttt is None else ttt + 0.1,
        "restart_cost_s": restart_cost,
        "restarts": [
            {
                "attempt": 1,
                "by": "engine",
                "resumed_from_step": 140 if every == 20 else 0,
                "lost_train_time_s": 0.25,
                "downtime_s": restart_cost - 0.25,
            }
        ]
        if fault
        else [],
    }
    result: dict[str, Any] = {
        "task": "epsilon-logreg",
        "run_id": f"r{i}",
        "state": "finished",
        "world_size": 2,
        "algorithm": algorithm,
        "config": {
            "algorithm": {"name": algorithm},
            "seed": 42 + i,
            "train": {"checkpoint_every_steps": every, "checkpoint_every_epochs": None},
        },
        "goal": {"reached": ttt is not None},
        "summary": summary,
        "faults": [{"spec": KILL, "kind": "kill", "rank": 1, "step": 150}] if fault else [],
    }
    return Run(Path(f"/runs/r{i}"), f"r{i}", "finished", result)


def _runs() -> list[Run]:
    runs = []
    i = 0
    for every in (20, None):
        for t in (0.3, 0.4, 0.5):  # without the fault
            runs.append(_run(i := i + 1, "allreduce", every, t))
        for t, rc in ((4.3, 3.9), (4.6, 4.1), (5.1, 4.6)):  # with it
            runs.append(_run(i := i + 1, "allreduce", every, t, fault=True, restart_cost=rc))
    # topk: killed runs at every 100 steps, but the runs without the fault have no checkpoints
    runs += [_run(i := i + 1, "topk", None, t) for t in (0.6, 0.7)]
    runs += [_run(i := i + 1, "topk", 100, 3.0, fault=True, restart_cost=2.5)]
    runs += [_run(i := i + 1, "topk", 100, None, fault=True, restart_cost=2.0)]  # missed
    # localsgd: only killed runs, nothing to compare with
    runs += [_run(i := i + 1, "localsgd", 20, 2.0, fault=True, restart_cost=1.5)]
    return runs


def test_fault_runs_are_their_own_configurations_paired_with_their_twins() -> None:
    configs = group(_runs())
    assert len(configs) == 7  # allreduce 2 × 2, topk 2, localsgd 1
    assert sum("faults" in c.config for c in configs) == 4
    rows = failure_costs(configs)
    assert [(r["algorithm"], r["checkpoint"]) for r in rows] == [
        ("allreduce", "every 20 steps"),
        ("allreduce", "none"),
        ("localsgd", "every 20 steps"),
        ("topk", "every 100 steps"),
    ]
    every20 = rows[0]
    assert every20["faults"] == KILL and every20["baseline_exact"]
    ttt = every20["time_to_target"]
    assert ttt["without"]["median"] == 0.4 and ttt["with"]["median"] == 4.6
    assert ttt["cost"] == pytest.approx(4.2)
    assert every20["wall_time_to_target"]["cost"] == pytest.approx((4.6 + 0.1) - (0.4 + 0.1))
    iv = ttt["cost_interval"]
    assert iv is not None and 4.3 - 0.5 <= iv["low"] <= 4.2 <= iv["high"] <= 5.1 - 0.3
    assert every20["restart_cost_s"] == {"n": 3, "median": 4.1, "min": 3.9, "max": 4.6}
    assert every20["restarts"]["median"] == 1
    assert every20["lost_train_time_s"]["median"] == 0.25
    assert every20["downtime_s"]["median"] == pytest.approx(4.1 - 0.25)
    assert every20["resumed_from_step"]["median"] == 140
    assert rows[1]["resumed_from_step"]["median"] == 0  # no checkpoint: the restart starts over
    # the killed run at every 20 steps is compared with the un-killed run at every 20 steps
    assert "checkpoint_every_steps=20" in every20["baseline"]
    assert "checkpoint_every_steps=None" in rows[1]["baseline"]


def test_a_missing_twin_falls_back_to_the_run_without_checkpoints_and_says_so() -> None:
    rows = {r["algorithm"]: r for r in failure_costs(group(_runs()))}
    topk = rows["topk"]
    assert not topk["baseline_exact"] and topk["baseline_checkpoint"] == "none"
    ttt = topk["time_to_target"]
    assert ttt["with"]["n"] == 2 and ttt["with"]["n_missed"] == 1  # missed: counted, not dropped
    assert ttt["cost"] == pytest.approx(3.0 - statistics.median([0.6, 0.7]))
    assert ttt["cost_interval"] is None and "no interval" in ttt["notes"][0]
    local = rows["localsgd"]
    assert local["baseline"] is None and local["time_to_target"]["cost"] is None
    assert local["time_to_target"]["notes"] == ["no run without the fault to compare with"]


def test_no_fault_no_rows() -> None:
    assert failure_costs(group([_run(0, "allreduce", None, 0.3)])) == []


def test_figure_and_table_show_the_cost(tmp_path: Path) -> None:
    rows = failure_costs(group(_runs()))
    paths = figures.save(figures.failure_cost(rows, "caption text"), tmp_path, "failure_cost")
    svg = paths["svg"].read_text()
    assert paths["png"].stat().st_size > 10_000 and "caption text" in svg and "+4.2" in svg
    html = _failures_table(rows)
    costs = [float(v) for v in re.findall(r'data-col="ttt_cost" data-value="([^"]+)"', html)]
    assert costs == pytest.approx([4.2, 4.2, 2.35])  # localsgd has none: no value, a dash
    assert "(without: checkpoint none)" in html  # topk's fallback baseline is named
    assert _failures_table([]) == ""
