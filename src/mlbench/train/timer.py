"""The loop's phase timer.

Phases are contiguous spans measured with ``time.perf_counter``. Inside a training step they
are laps: ``lap(name)`` ends the span that began at the previous lap (or at ``step_start``) and
charges it to ``name``, so one clock read separates two phases and the phases of a step add up to
its wall time except the loop's bookkeeping after the last lap. Around a step (evaluation, a
checkpoint) ``with timer.phase(name):`` times one span. On a GPU the timer synchronises
the device at every phase boundary, so work queued asynchronously by a phase is charged to that
phase and not to whichever later call happens to block (the original MLBench's flaw). The cost is
that the host cannot run ahead of the device across phase boundaries — a small, constant overhead
stated in docs/timing.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType

from mlbench import vocab

# plain strings (dict keys on the hot path); the names are the shared vocabulary's
PHASES: tuple[str, ...] = tuple(p.value for p in vocab.PHASES)
STEP_PHASES: tuple[str, ...] = tuple(p.value for p in vocab.STEP_PHASES)


class _Phase:
    """``with timer.phase(name):`` — one reusable object per phase name.

    A plain class, not ``@contextmanager``: the generator machinery cost ~4 µs per phase, 6
    phases per step, which on a sub-millisecond step (task 2a) was several per cent of overhead
    over a bare loop (benchmarks/harness_overhead.py). Phases never nest within themselves.
    """

    __slots__ = ("_start", "name", "timer")

    def __init__(self, timer: PhaseTimer, name: str) -> None:
        self.timer, self.name, self._start = timer, name, 0.0

    def __enter__(self) -> None:
        sync = self.timer._sync
        if sync is not None:
            sync()
        self._start = time.perf_counter()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        timer = self.timer
        if timer._sync is not None:
            timer._sync()
        timer.window[self.name] += time.perf_counter() - self._start


class PhaseTimer:
    def __init__(self, sync: Callable[[], None] | None = None) -> None:
        self._sync = sync
        # Time is added to the current window only; totals are the windows taken so far plus
        # the current one (one dict update per lap instead of two: laps are on the hot path).
        self._taken: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self.window: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self.train_time = 0.0  # sum of step wall times (excludes eval/checkpoint)
        self.window_step_time = 0.0
        self._step_start: float | None = None
        self._mark = 0.0  # where the current lap began
        self._phases = {name: _Phase(self, name) for name in PHASES}

    @property
    def totals(self) -> dict[str, float]:
        """Seconds per phase since the timer was made (a fresh dict)."""
        return {k: v + self.window[k] for k, v in self._taken.items()}

    def phase(self, name: str) -> _Phase:
        """Context manager timing one phase (an unknown name is a KeyError)."""
        return self._phases[name]

    def _sync_now(self) -> None:
        if self._sync is not None:
            self._sync()

    def move(self, source: str, target: str, seconds: float) -> None:
        """Re-attribute time measured in one phase to another (e.g. communication an overlapping
        scheme waited for inside backward). The step's wall time is unchanged."""
        seconds = max(0.0, min(seconds, self.window[source]))
        self.window[source] -= seconds
        self.window[target] += seconds

    def step_start(self) -> None:
        self._sync_now()
        self._step_start = self._mark = time.perf_counter()

    def lap(self, name: str) -> None:
        """Charge the time since the last lap (or ``step_start``) to phase ``name``.

        Why laps and not a ``with`` block per phase inside the step: entering and leaving six
        context managers, two clock reads each, was ~4.4 µs per step — about 1 % of a task 2a
        step (0.45 ms) on its own, against a 2 % budget for the whole harness
        (benchmarks/harness_overhead.py). A lap is one call and one clock read.
        """
        if self._sync is not None:
            self._sync()
        now = time.perf_counter()
        self.window[name] += now - self._mark
        self._mark = now

    def step_end(self) -> float:
        assert self._step_start is not None, "step_end without step_start"
        self._sync_now()
        elapsed = time.perf_counter() - self._step_start
        self._step_start = None
        self.train_time += elapsed
        self.window_step_time += elapsed
        return elapsed

    def restore(self, train_time: float, totals: dict[str, float]) -> None:
        """Continue from a checkpoint's clocks: the summed step time and the per-phase totals
        (the current window starts empty, as it does after a checkpoint's flush)."""
        self.train_time = train_time
        self._taken = {name: float(totals.get(name, 0.0)) for name in PHASES}
        self.window = dict.fromkeys(PHASES, 0.0)
        self.window_step_time = 0.0

    def take_window(self) -> tuple[dict[str, float], float]:
        """Phase times and summed step time since the last call, then reset the window."""
        window, step_time = self.window, self.window_step_time
        for k, v in window.items():
            self._taken[k] += v
        self.window = dict.fromkeys(PHASES, 0.0)
        self.window_step_time = 0.0
        return window, step_time
