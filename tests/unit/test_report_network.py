"""report: ``--network`` runs are separate configurations, and the time-vs-bandwidth series and
figure come from their result.json (``network`` and ``summary.step_time``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlbench.launch.network import NetworkSpec, parse_spec, record
from mlbench.report import figures
from mlbench.report.build import network_series
from mlbench.report.load import Run, group


def _run(i: int, algorithm: str, spec: str | None, step_time: float, measured: float) -> Run:
    result: dict[str, Any] = {
        "task": "cifar10-resnet20",
        "run_id": f"r{i}",
        "state": "finished",
        "world_size": 2,
        "algorithm": algorithm,
        "config": {"algorithm": {"name": algorithm}, "seed": 42 + i},
        "summary": {"step_time": step_time},
    }
    if spec:
        parsed = parse_spec(spec)
        result["network"] = record(parsed, {"bandwidth_bps": measured, "latency_s": 1e-4})
    return Run(Path(f"/runs/r{i}"), f"r{i}", "finished", result)


def test_network_runs_group_apart_and_make_one_series_per_scheme(tmp_path: Path) -> None:
    runs = [
        _run(0, "allreduce", "bandwidth=1gbit", 0.5, 0.95e9),
        _run(1, "allreduce", "bandwidth=20mbit", 1.0, 18e6),
        _run(2, "allreduce", "bandwidth=20mbit", 1.2, 18.5e6),  # a repeat
        _run(3, "topk", "bandwidth=1gbit", 0.6, 0.9e9),
        _run(4, "topk", "bandwidth=10gbit", 0.6, 4.5e9),  # the host could not deliver it
    ]
    configs = group(runs)
    assert len(configs) == 4  # the two 20 Mbit runs are repeats of one configuration
    assert all("network" in c.config for c in configs)
    series = network_series(configs)
    assert [s["label"] for s in series] == ["allreduce · 2 workers", "topk · 2 workers"]
    allreduce = series[0]["points"]
    assert [p["requested_bps"] for p in allreduce] == [20e6, 1e9]  # sorted by bandwidth
    assert allreduce[0]["step_time"] == 1.1 and allreduce[0]["n"] == 2
    assert (allreduce[0]["step_time_min"], allreduce[0]["step_time_max"]) == (1.0, 1.2)
    assert [p["flagged"] for p in series[1]["points"]] == [False, True]
    paths = figures.save(figures.time_vs_bandwidth(series, "caption"), tmp_path, "tvb")
    assert paths["png"].stat().st_size > 10_000 and "caption" in paths["svg"].read_text()


def test_unshaped_runs_make_no_series() -> None:
    assert network_series(group([_run(0, "allreduce", None, 0.5, 0.0)])) == []


def test_record_spec_survives_for_grouping() -> None:
    assert record(NetworkSpec(1e9, text="bandwidth=1gbit"), None)["spec"] == "bandwidth=1gbit"
