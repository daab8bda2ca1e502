"""The loop's phase timer.

Phases are contiguous spans measured with ``time.perf_counter``. On a GPU the timer synchronises
the device at every phase boundary, so work queued asynchronously by a phase is charged to that
phase and not to whichever later call happens to block (the original MLBench's flaw). The cost is
that the host cannot run ahead of the device across phase boundaries — a small, constant overhead
stated in docs/timing.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

PHASES = ("data", "forward", "backward", "communication", "optimizer", "eval", "checkpoint")
STEP_PHASES = ("data", "forward", "backward", "communication", "optimizer")


class PhaseTimer:
    def __init__(self, sync: Callable[[], None] | None = None) -> None:
        self._sync = sync or (lambda: None)
        self.totals: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self.window: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self.train_time = 0.0  # sum of step wall times (excludes eval/checkpoint)
        self.window_step_time = 0.0
        self._step_start: float | None = None

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        assert name in self.totals, name
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            elapsed = time.perf_counter() - start
            self.totals[name] += elapsed
            self.window[name] += elapsed

    def move(self, source: str, target: str, seconds: float) -> None:
        """Re-attribute time measured in one phase to another (e.g. communication an overlapping
        scheme waited for inside backward). The step's wall time is unchanged."""
        seconds = max(0.0, min(seconds, self.window[source]))
        for acc in (self.totals, self.window):
            acc[source] -= seconds
            acc[target] += seconds

    def step_start(self) -> None:
        self._sync()
        self._step_start = time.perf_counter()

    def step_end(self) -> float:
        assert self._step_start is not None, "step_end without step_start"
        self._sync()
        elapsed = time.perf_counter() - self._step_start
        self._step_start = None
        self.train_time += elapsed
        self.window_step_time += elapsed
        return elapsed

    def take_window(self) -> tuple[dict[str, float], float]:
        """Phase times and summed step time since the last call, then reset the window."""
        window, step_time = self.window, self.window_step_time
        self.window = dict.fromkeys(PHASES, 0.0)
        self.window_step_time = 0.0
        return window, step_time
