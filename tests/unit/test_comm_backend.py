"""Task 0a's pure parts: the size grid, the bandwidth definitions, config validation."""

from __future__ import annotations

import itertools

import pytest

from mlbench.errors import ConfigError
from mlbench.registry import get_task, task_names
from mlbench.runs import resolve_config
from mlbench.tasks.base import MeasurementTask
from mlbench.tasks.comm_backend import CommBenchConfig, bus_bandwidth, sizes


def test_sizes_are_log_spaced_from_one_to_1e8() -> None:
    grid = sizes(CommBenchConfig())
    assert grid[0] == 1 and grid[-1] == 100_000_000
    assert len(grid) == 17  # 8 decades × 2 points + 1
    assert grid == sorted(set(grid))
    ratios = [b / a for a, b in itertools.pairwise(grid)]
    assert all(2.9 < r < 3.5 for r in ratios)  # √10 apart, rounded
    assert sizes(CommBenchConfig(min_numel=5, max_numel=5)) == [5]
    assert sizes(CommBenchConfig(max_numel=1000, points_per_decade=1)) == [1, 10, 100, 1000]


@pytest.mark.parametrize(
    ("op", "world", "factor"),
    [
        ("all_reduce", 2, 1.0),
        ("all_reduce", 4, 1.5),
        ("all_gather", 4, 0.75),
        ("broadcast", 8, 1.0),
    ],
)
def test_bus_bandwidth_follows_nccl_tests(op: str, world: int, factor: float) -> None:
    algbw, busbw = bus_bandwidth(op, 4e9, 2.0, world)
    assert algbw == 2e9 and busbw == pytest.approx(2e9 * factor)


def test_task_is_registered_and_validated() -> None:
    assert "comm-backend" in task_names()
    task = get_task("comm-backend")
    assert isinstance(task, MeasurementTask) and task.spec()["id"] == "0a"
    _, cfg = resolve_config("comm-backend", overrides=["bench.ops=all_reduce,broadcast"])
    task.validate(cfg, 2)
    for bad in (
        ["bench.ops=reduce_scatter"],
        ["bench.dtypes=fp64"],
        ["bench.min_numel=10", "bench.max_numel=5"],
        ["bench.ops="],
    ):
        _, cfg = resolve_config("comm-backend", overrides=bad)
        with pytest.raises(ConfigError):
            task.validate(cfg, 2)
    # a measurement task has no training builders at all (not stubs that raise)
    assert not hasattr(task, "build_model") and not hasattr(task, "train_forward")
