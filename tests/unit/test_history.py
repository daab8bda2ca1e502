"""History keying and the regression rule, with known values."""

from __future__ import annotations

import math
from typing import Any

import pytest

from mlbench.results import history
from mlbench.results.history import Run

OPEN = {"data.dir", "train.log_every_steps"}


def _result(version: str, commit: str, ttt: float | None, thr: float, **over: Any) -> dict:
    config = {
        "task": "t",
        "seed": over.pop("seed", 1),
        "goal": over.pop("goal", "light"),
        "data": {"dir": over.pop("dir", "/a"), "batch_size": over.pop("batch", 32)},
        "train": {"log_every_steps": 10},
    }
    env = {
        "packages": {"mlbench": version},
        "git_commit": commit,
        "cpu_model": "X",
        "cpu_count": 2,
        "gpu_count": 0,
        "torch": "2.13",
        "python": "3.11.7",
        "hostname": over.pop("host", "h1"),
        **over.pop("env", {}),
    }
    return {
        "task": "t",
        "state": over.pop("state", "finished"),
        "world_size": 2,
        "backend": "gloo",
        "config": config,
        "environment": env,
        "goal": {"reached": ttt is not None},
        "summary": {"time_to_target": ttt, "throughput": thr},
        "run_id": f"{commit}-{ttt}",
    }


def test_config_hash_ignores_seed_and_open_keys_not_closed_ones_or_the_goal() -> None:
    base = _result("1", "a", 1.0, 1.0)["config"]
    same = _result("1", "a", 1.0, 1.0, seed=9, dir="/elsewhere")["config"]
    assert history.config_hash(base, OPEN) == history.config_hash(same, OPEN)
    other_batch = _result("1", "a", 1.0, 1.0, batch=64)["config"]
    other_goal = _result("1", "a", 1.0, 1.0, goal="full")["config"]
    assert history.config_hash(base, OPEN) != history.config_hash(other_batch, OPEN)
    assert history.config_hash(base, OPEN) != history.config_hash(other_goal, OPEN)


def test_fingerprint_ignores_hostname_not_hardware() -> None:
    a = history.fingerprint(_result("1", "a", 1.0, 1.0, host="h1"))
    assert a == history.fingerprint(_result("1", "a", 1.0, 1.0, host="h2"))
    assert a != history.fingerprint(_result("1", "a", 1.0, 1.0, env={"cpu_model": "Y"}))
    assert a == ("cpu_model=X, cpu_count=2, gpu_count=0, torch=2.13, python=3.11, backend=gloo")


def test_interval_minmax_below_five_repeats_bootstrap_from_five() -> None:
    assert history.interval([3.0, 1.0, 2.0]) == (1.0, 3.0)
    values = [10.0, 10.1, 9.9, 10.05, 9.95, 10.02, 9.98, 10.03, 30.0]
    lo, hi = history.interval(values)
    assert 9.9 <= lo <= 10.02 <= hi <= 10.1  # the median's interval: the outlier is not in it
    assert history.interval(values) == (lo, hi)  # fixed seed: same data, same verdict


@pytest.mark.parametrize(
    ("now", "before", "better", "verdict"),
    [
        ([12.0, 12.5], [10.0, 11.0], "lower", "regression"),  # median 12.25 > max 11
        ([10.5], [10.0, 11.0], "lower", "same"),
        ([9.0], [10.0, 11.0], "lower", "improvement"),
        ([90.0], [100.0, 110.0], "higher", "regression"),  # throughput fell below min
        ([math.inf, math.inf, 5.0], [5.0, 6.0], "lower", "regression"),  # most runs missed
    ],
)
def test_judge(now: list, before: list, better: str, verdict: str) -> None:
    assert history.judge(now, before, better)["verdict"] == verdict


def test_build_orders_versions_by_commit_time_and_flags_the_newest() -> None:
    old = [
        _result("0.1", "aaa", t, 100.0, env={"git_commit_time": "2026-01-01T00:00:00+00:00"})
        for t in (10.0, 10.5, 11.0)
    ]
    new = [
        _result("0.2", "bbb", t, 80.0, env={"git_commit_time": "2026-02-01T00:00:00+00:00"})
        for t in (13.0, None, 12.0)
    ]  # one missed: counts as missed, not dropped
    other_cfg = [_result("0.2", "bbb", 1.0, 1.0, batch=64)]
    failed = [_result("0.2", "bbb", None, 0.0, state="failed")]
    # the newer code ran first: order comes from the commit time, not the run time
    runs = [Run(r, 1.0) for r in new + failed] + [Run(r, 2.0) for r in old + other_cfg]
    series = history.build(runs, OPEN)
    assert len(series) == 2
    main = next(s for s in series if len(s.versions) == 2)
    assert [v.version for v in main.versions] == ["0.1+aaa", "0.2+bbb"]
    row = main.versions[1].row()
    assert row["repeats"] == 3 and row["missed"] == 1
    assert row["time_to_target"] == {"median": 13.0, "min": 12.0, "max": 13.0}
    verdicts = main.verdicts()
    assert verdicts["time_to_target"]["verdict"] == "regression"
    assert verdicts["time_to_target"]["previous_interval"] == [10.0, 11.0]
    assert verdicts["throughput"]["verdict"] == "regression"
    only = history.build(runs, OPEN, config=main.config)
    assert [s.config for s in only] == [main.config]
