"""End-to-end: task 0a (``mlbench run comm-backend``) on 2 real gloo workers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlbench.tasks.comm_backend import bus_bandwidth
from mlbench.telemetry.events import read_events

from .helpers import mlbench, only_run_dir


@pytest.mark.world_size(2)
def test_comm_backend_two_workers(tmp_path: Path) -> None:
    proc = mlbench(
        "run",
        "comm-backend",
        "--workers",
        "2",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--json",
        "--set",
        "bench.max_numel=1000",
        "--set",
        "bench.points_per_decade=1",
        "--set",
        "bench.copy_mb=4",
        "--set",
        "bench.repeats=3",
        home=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["state"] == "finished" and result["task"] == "comm-backend"
    assert result["official"] is False  # bench.* shortened: not the full 1..1e8 sweep
    rows = result["summary"]["measurements"]
    ops = {(r["op"], r["dtype"]) for r in rows}
    assert {("all_reduce", "fp32"), ("all_gather", "fp32"), ("broadcast", "fp32")} <= ops
    for op, dtype in ops:
        assert [r["numel"] for r in rows if (r["op"], r["dtype"]) == (op, dtype)] == [
            1,
            10,
            100,
            1000,
        ]
    for r in rows:
        assert r["time"] > 0 and r["repeats"] == 3
        elem = 4 if r["dtype"] == "fp32" else 2
        assert r["bytes"] == r["numel"] * elem * (2 if r["op"] == "all_gather" else 1)
        _, busbw = bus_bandwidth(r["op"], r["bytes"], r["time"], 2)
        assert r["busbw_gbps"] == pytest.approx(busbw / 1e9)
    metrics = result["summary"]["final_metrics"]
    assert metrics["memcpy_gbps"] > 0.1
    assert metrics["busbw"] == max(r["busbw_gbps"] for r in rows)
    # the same numbers as events, per point (step = element count), on every rank
    run_dir = only_run_dir(tmp_path / "runs")
    for rank in (0, 1):
        events = read_events(run_dir / f"rank-{rank}.jsonl")
        busbw = {
            (e["name"], e["step"]): e["value"]
            for e in events
            if e["kind"] == "comm" and e["name"].endswith("/busbw")
        }
        assert len(busbw) == len(rows)
        for r in rows:  # times are max-reduced, so every rank reports the same
            assert busbw[(f"{r['op']}/{r['dtype']}/busbw", r["numel"])] == pytest.approx(
                r["busbw_gbps"]
            )
