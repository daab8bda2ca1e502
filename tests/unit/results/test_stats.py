"""Every statistic of mlbench.results.stats against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlbench.results import stats


def test_olympic_mean_drops_best_and_worst() -> None:
    assert stats.olympic_mean([1, 2, 3, 10]) == 2.5
    assert stats.olympic_mean([10, 3, 1, 2]) == 2.5  # order does not matter
    assert stats.olympic_mean([5, 1, 9]) == 5.0


def test_olympic_mean_treats_one_missed_run_as_the_slowest() -> None:
    # MLPerf: "a single non-converging run may be treated as the slowest run and dropped"
    assert stats.olympic_mean([3, 1, 2, None]) == 2.5  # drop 1 (fastest) and the missed run
    assert stats.olympic_mean([4, 1, None]) == 4.0


def test_olympic_mean_undefined_for_small_or_invalid_sets() -> None:
    assert stats.olympic_mean([1.0, 2.0]) is None  # nothing would remain
    assert stats.olympic_mean([1.0]) is None
    assert stats.olympic_mean([]) is None
    # "A benchmark result is invalid if there is more than one non-converging run."
    assert stats.olympic_mean([1.0, 2.0, 3.0, None, None]) is None


def test_summary_of_three_repeats() -> None:
    s = stats.summarize([3.0, 1.0, 2.0])
    assert (s.n, s.n_reached, s.n_missed) == (3, 3, 0)
    assert s.median == 2.0 and s.mean == 2.0 and s.minimum == 1.0 and s.maximum == 3.0
    assert s.olympic_mean == 2.0
    # the resampled median of [1, 2, 3] is 1 with probability 7/27 > 2.5 % (two or three 1s),
    # and 3 likewise, so the 95 % percentile interval is [1, 3]
    assert s.interval is not None
    assert (s.interval.low, s.interval.high) == (1.0, 3.0)
    assert s.interval.method == "percentile bootstrap"
    assert s.notes == ()


def test_summary_counts_missed_runs_and_says_so() -> None:
    s = stats.summarize([3.0, None, 1.0, 2.0, float("nan")])
    assert (s.n, s.n_reached, s.n_missed) == (5, 3, 2)
    assert s.values == (3.0, 1.0, 2.0)
    assert s.median == 2.0
    assert s.olympic_mean is None  # two missed: invalid under MLPerf's rule
    assert any("2 of 5 runs missed" in n for n in s.notes)


def test_no_interval_from_fewer_than_three_values() -> None:
    for values in ([5.0], [5.0, 7.0]):
        s = stats.summarize(values)
        assert s.interval is None
        assert s.median == float(np.median(values))
        assert any("no interval" in n for n in s.notes)
    empty = stats.summarize([None, None])
    assert empty.median is None and empty.mean is None and empty.n_missed == 2


def test_interval_is_seeded_and_contains_the_median() -> None:
    values = [10.2, 11.0, 9.7, 10.5, 12.9, 10.1]
    a = stats.bootstrap_interval(values)
    b = stats.bootstrap_interval(values)
    assert a == b  # a report is reproducible
    assert a is not None and a.low <= float(np.median(values)) <= a.high
    assert min(values) <= a.low and a.high <= max(values)


def test_interval_of_identical_values_is_a_point() -> None:
    s = stats.summarize([4.0, 4.0, 4.0])
    assert s.interval is not None and (s.interval.low, s.interval.high) == (4.0, 4.0)


def test_speedup_and_efficiency_with_propagated_interval() -> None:
    sc = stats.scaling([8.0, 10.0, 12.0], [4.0, 5.0, 6.0], k0=1, k=2)
    assert sc.speedup == 2.0
    assert sc.efficiency == 1.0
    # resampled medians: base in {8, 10, 12}, other in {4, 5, 6}, the extremes each with
    # probability 7/27; the smallest ratio 8/6 and the largest 12/4 each have probability
    # (7/27)^2 = 6.7 % > 2.5 %, so they are the interval's ends
    assert sc.speedup_interval is not None and sc.efficiency_interval is not None
    assert sc.speedup_interval.low == pytest.approx(8 / 6)
    assert sc.speedup_interval.high == pytest.approx(3.0)
    assert sc.efficiency_interval.low == pytest.approx(8 / 6 / 2)
    assert sc.efficiency_interval.high == pytest.approx(1.5)


def test_speedup_without_enough_repeats_has_no_interval() -> None:
    sc = stats.scaling([10.0, 12.0], [5.0, None, 7.0], k0=1, k=4)
    assert sc.speedup == pytest.approx(11.0 / 6.0)
    assert sc.efficiency == pytest.approx(11.0 / 6.0 / 4)
    assert sc.speedup_interval is None and sc.efficiency_interval is None
    assert sc.notes
    none = stats.scaling([None], [5.0], k0=1, k=2)
    assert none.speedup is None and none.efficiency is None
    with pytest.raises(ValueError):
        stats.scaling([1.0], [1.0], k0=0, k=2)


def test_as_dict_is_json_ready() -> None:
    import json

    d = stats.summarize([1.0, 2.0, 3.0]).as_dict()
    assert json.loads(json.dumps(d))["interval"]["low"] == 1.0
    assert not math.isnan(d["median"])


def test_difference_of_medians_and_its_interval() -> None:
    # the cost of a failure: median(with) - median(without), both sides resampled
    value, interval, notes = stats.difference([1.0, 2.0, 3.0], [11.0, 12.0, 13.0])
    assert value == 10.0 and not notes
    assert interval is not None and 8.0 <= interval.low <= 10.0 <= interval.high <= 12.0
    assert stats.difference([1.0, None], [2.0, 3.0])[:2] == (1.5, None)  # too few for interval
    assert stats.difference([None], [2.0])[0] is None
    assert stats.difference([1.0, 1.0, 1.0], [3.0, 3.0, 3.0])[1] == stats.Interval(2.0, 2.0)
