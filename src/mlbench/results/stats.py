"""Statistics over repeated runs: the numbers a report prints for each configuration.

A *configuration* is everything that sets a run apart except its seed (task, resolved config,
worker count, algorithm); its *repeats* are the runs that differ only in the seed. docs/reports.md
explains each number to users; this module is the one place that computes them.

Choices, and why:

* **Runs that missed the target are counted, never dropped.** Time-to-target statistics (median,
  mean, interval) are over the runs that *reached* the target, and every summary carries
  ``n_missed`` beside them, so a configuration that reached its target in 2 of 5 runs never looks
  like one that reached it in 2 of 2. MLPerf's olympic mean follows MLPerf's own rule for a run
  that did not converge (see :func:`olympic_mean`).
* **The interval is a seeded percentile bootstrap of the median** (``scipy.stats.bootstrap``,
  ``method="percentile"``). Not BCa: BCa's acceleration comes from a jackknife, which for the
  median of 3–5 values is degenerate (leave-one-out medians tie), and scipy then warns and returns
  NaN; the percentile interval is defined for every sample and is what the median's
  distribution-free nature suggests. It is seeded so a report is reproducible byte for byte.
  Honest caveat, printed in the report: with 3–10 repeats every bootstrap interval under-covers
  (with 3 values the median's interval is close to [min, max]); it is a measure of spread, not a
  guarantee.
* **No interval from fewer than** :data:`MIN_INTERVAL` **values**: the bootstrap distribution of
  the median of two values has three points; calling that a 95 % interval would be pretending.
* **Speedup** ``T(k0) / T(k)`` on medians, and its interval by bootstrapping the ratio with both
  configurations' repeats resampled independently (they are independent runs, not pairs);
  **parallel efficiency** is ``speedup / (k / k0)``, so its interval is the speedup's scaled by the
  same constant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: fewest values a bootstrap interval is computed from (see the module docstring)
MIN_INTERVAL = 3
CONFIDENCE = 0.95
N_RESAMPLES = 9999
SEED = 0
#: fewest runs (reached or not) MLPerf's olympic mean is defined for: it drops two of them
MIN_OLYMPIC = 3


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    confidence: float = CONFIDENCE
    method: str = "percentile bootstrap"

    def as_dict(self) -> dict[str, Any]:
        return {
            "low": self.low,
            "high": self.high,
            "confidence": self.confidence,
            "method": self.method,
        }


@dataclass(frozen=True)
class Summary:
    """Time-to-target (or any per-run number) of one configuration's repeats."""

    n: int  # runs in the configuration
    n_reached: int
    n_missed: int
    values: tuple[float, ...]  # the reached runs' values, as given
    median: float | None
    mean: float | None
    minimum: float | None
    maximum: float | None
    interval: Interval | None
    olympic_mean: float | None
    notes: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "n_reached": self.n_reached,
            "n_missed": self.n_missed,
            "values": list(self.values),
            "median": self.median,
            "mean": self.mean,
            "min": self.minimum,
            "max": self.maximum,
            "interval": self.interval.as_dict() if self.interval else None,
            "olympic_mean": self.olympic_mean,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class Scaling:
    """Speedup and parallel efficiency of ``k`` workers over the baseline ``k0``."""

    k0: int
    k: int
    speedup: float | None
    speedup_interval: Interval | None
    efficiency: float | None
    efficiency_interval: Interval | None
    notes: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        return {
            "k0": self.k0,
            "k": self.k,
            "speedup": self.speedup,
            "speedup_interval": self.speedup_interval.as_dict() if self.speedup_interval else None,
            "efficiency": self.efficiency,
            "efficiency_interval": (
                self.efficiency_interval.as_dict() if self.efficiency_interval else None
            ),
            "notes": list(self.notes),
        }


def _reached(values: Sequence[float | None]) -> list[float]:
    """The values of runs that reached the target; a missed run is ``None`` (or NaN)."""
    out = []
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        out.append(float(v))
    return out


def olympic_mean(values: Sequence[float | None]) -> float | None:
    """MLPerf Training's benchmark result: drop the fastest and the slowest run, average the rest.

    MLPerf's rules ("Benchmark Results"): "computed by dropping the fastest and slowest runs, then
    taking the mean of the remaining times. For this purpose, a single non-converging run may be
    treated as the slowest run and dropped. A benchmark result is invalid if there is more than
    one non-converging run." A missed run is ``None`` here. MLPerf asks for 5 or 10 runs; with
    fewer than :data:`MIN_OLYMPIC` runs nothing would remain, so the result is undefined (None),
    and so is one with two or more missed runs.

    >>> olympic_mean([1, 2, 3, 10])
    2.5
    >>> olympic_mean([4, 1, None])  # the missed run is the dropped slowest
    4.0
    """
    reached = sorted(_reached(values))
    missed = len(values) - len(reached)
    if len(values) < MIN_OLYMPIC or missed > 1:
        return None
    kept = reached[1:] if missed == 1 else reached[1:-1]
    return float(np.mean(kept))


def bootstrap_interval(
    values: Sequence[float],
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> Interval | None:
    """Seeded percentile-bootstrap interval of the median; None below :data:`MIN_INTERVAL`."""
    data = np.asarray(values, dtype=float)
    if data.size < MIN_INTERVAL:
        return None
    if np.all(data == data[0]):  # no spread: every resample is the same (scipy would warn)
        return Interval(float(data[0]), float(data[0]), confidence)
    from scipy import stats

    res = stats.bootstrap(
        (data,),
        np.median,
        confidence_level=confidence,
        n_resamples=n_resamples,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    ci = res.confidence_interval
    return Interval(float(ci.low), float(ci.high), confidence)


def summarize(
    values: Sequence[float | None],
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> Summary:
    """Median, mean, min/max, bootstrap interval and olympic mean of one configuration.

    ``values`` has one entry per run: its time-to-target, or ``None`` when it missed the target.
    """
    reached = _reached(values)
    notes = []
    n_missed = len(values) - len(reached)
    if n_missed:
        notes.append(
            f"{n_missed} of {len(values)} runs missed the target: the statistics are over the "
            f"{len(reached)} that reached it"
        )
    if len(reached) < MIN_INTERVAL:
        notes.append(f"no interval from fewer than {MIN_INTERVAL} values ({len(reached)})")
    if len(values) < MIN_OLYMPIC:
        notes.append(f"no olympic mean from fewer than {MIN_OLYMPIC} runs ({len(values)})")
    elif n_missed > 1:
        notes.append("no olympic mean: MLPerf counts a result with two or more missed runs invalid")
    arr = np.asarray(reached, dtype=float)
    return Summary(
        n=len(values),
        n_reached=len(reached),
        n_missed=n_missed,
        values=tuple(reached),
        median=float(np.median(arr)) if arr.size else None,
        mean=float(np.mean(arr)) if arr.size else None,
        minimum=float(arr.min()) if arr.size else None,
        maximum=float(arr.max()) if arr.size else None,
        interval=bootstrap_interval(
            reached, confidence=confidence, n_resamples=n_resamples, seed=seed
        ),
        olympic_mean=olympic_mean(values),
        notes=tuple(notes),
    )


def _median_ratio(base: np.ndarray, other: np.ndarray, axis: int = -1) -> np.ndarray:
    result: np.ndarray = np.median(base, axis=axis) / np.median(other, axis=axis)
    return result


def scaling(
    base: Sequence[float | None],
    other: Sequence[float | None],
    *,
    k0: int,
    k: int,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> Scaling:
    """Speedup ``median(T_k0) / median(T_k)`` and efficiency ``speedup / (k / k0)``.

    ``base`` and ``other`` are the two configurations' time-to-target per run (None = missed;
    the ratio uses the runs that reached the target). The interval resamples both sides
    independently (``scipy.stats.bootstrap`` with two samples, ``paired=False``); it needs
    :data:`MIN_INTERVAL` reached runs on each side.
    """
    if k0 <= 0 or k <= 0:
        raise ValueError(f"worker counts must be positive, got k0={k0}, k={k}")
    b = np.asarray(_reached(base), dtype=float)
    o = np.asarray(_reached(other), dtype=float)
    notes = []
    if not b.size or not o.size:
        notes.append("no speedup: a side has no run that reached the target")
        return Scaling(k0, k, None, None, None, None, tuple(notes))
    speedup = float(_median_ratio(b, o))
    scale = k / k0
    interval = None
    if min(b.size, o.size) < MIN_INTERVAL:
        notes.append(
            f"no interval: needs {MIN_INTERVAL} reached runs on each side ({b.size} and {o.size})"
        )
    elif np.all(b == b[0]) and np.all(o == o[0]):
        interval = Interval(speedup, speedup, confidence)
    else:
        interval = _bootstrap(b, o, _median_ratio, confidence, n_resamples, seed)
    eff_interval = (
        Interval(interval.low / scale, interval.high / scale, confidence) if interval else None
    )
    return Scaling(k0, k, speedup, interval, speedup / scale, eff_interval, tuple(notes))


def _median_difference(base: np.ndarray, other: np.ndarray, axis: int = -1) -> np.ndarray:
    result: np.ndarray = np.median(other, axis=axis) - np.median(base, axis=axis)
    return result


def difference(
    base: Sequence[float | None],
    other: Sequence[float | None],
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> tuple[float | None, Interval | None, tuple[str, ...]]:
    """``median(other) − median(base)`` over the runs that reached the target — e.g. the cost of
    a failure: time to target with it minus without — and its interval, both sides resampled
    independently as for :func:`scaling` (independent runs, not pairs; :data:`MIN_INTERVAL`
    reached runs on each side). Returns (difference, interval, notes)."""
    b = np.asarray(_reached(base), dtype=float)
    o = np.asarray(_reached(other), dtype=float)
    if not b.size or not o.size:
        return None, None, ("no difference: a side has no run that reached the target",)
    value = float(_median_difference(b, o))
    if min(b.size, o.size) < MIN_INTERVAL:
        note = f"no interval: needs {MIN_INTERVAL} reached runs on each side ({b.size}, {o.size})"
        return value, None, (note,)
    if np.all(b == b[0]) and np.all(o == o[0]):
        return value, Interval(value, value, confidence), ()
    return value, _bootstrap(b, o, _median_difference, confidence, n_resamples, seed), ()


def _bootstrap(
    base: np.ndarray,
    other: np.ndarray,
    statistic: Any,
    confidence: float,
    n_resamples: int,
    seed: int,
) -> Interval:
    """The percentile bootstrap interval of ``statistic(base, other)``, the two samples resampled
    independently (unpaired: independent runs), seeded so a report is reproducible."""
    from scipy import stats

    res = stats.bootstrap(
        (base, other),
        statistic,
        paired=False,
        vectorized=True,
        confidence_level=confidence,
        n_resamples=n_resamples,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    ci = res.confidence_interval
    return Interval(float(ci.low), float(ci.high), confidence)
