"""The in-rank half of ``--fault``: kill, hang or slow this rank at the step the spec names.

The worker builds a :class:`FaultInjector` only when this rank has a fault to act on in this
attempt (:func:`injector_for`); the loop then calls it after every step with the number of steps
done and its phase timer. With no fault the loop's only cost is one ``is None`` test per step.

* ``kill`` prints one line (``MLBENCH-FAULT: ...``) to stderr and SIGKILLs its own process — a
  crash with no chance to clean up, as a lost node. The line is the last the engine reads from
  the rank's stderr, so the run's reason names the fault.
* ``hang`` prints its line and blocks forever in :func:`hang_forever` outside any collective:
  its peers block in the next step's collective. The hang watchdog (``train.hang_timeout``)
  names this rank as stalled outside a collective and the others as waiting in one.
* ``slow`` sleeps, after each step, ``factor − 1`` times the step's own data, forward, backward
  and optimizer time, charged to those phases inside a timed span: the rank's train time and
  compute grow as a straggler's would, and its peers' communication phase shows the wait.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

from mlbench.attempts import read_restarts
from mlbench.faults import Fault
from mlbench.train.timer import PhaseTimer

MARKER = "MLBENCH-FAULT:"
#: the phases a straggler's extra time is charged to (everything a step does but communicate)
COMPUTE_PHASES = ("data", "forward", "backward", "optimizer")


def announce(fault: Fault, what: str) -> None:
    print(f"{MARKER} injected {fault.spec}: {what}", file=sys.stderr, flush=True)


def kill_self(fault: Fault, what: str) -> None:
    announce(fault, what)
    os.kill(os.getpid(), signal.SIGKILL)


def hang_forever(fault: Fault, step: int) -> None:
    """Block this thread for good (the name is what the watchdog's stack reading shows)."""
    announce(fault, f"rank {fault.rank} hangs after step {step}")
    threading.Event().wait()


class FaultInjector:
    """This rank's faults for this attempt; called by the loop after each step."""

    def __init__(self, faults: list[Fault]) -> None:
        self.faults = faults
        self._at_step = {f.step: f for f in faults if f.kind in ("kill", "hang") and f.step}
        self._timed = [f for f in faults if f.kind == "kill" and f.after is not None]
        slow = [f.factor for f in faults if f.kind == "slow" and f.factor is not None]
        self._slow = slow[0] if slow else None
        self._armed = False
        self._injected = dict.fromkeys(COMPUTE_PHASES, 0.0)

    def __call__(self, step: int, timer: PhaseTimer) -> None:
        if not self._armed:
            self._arm()
        if self._slow is not None:
            self._straggle(timer)
        fault = self._at_step.get(step)
        if fault is None:
            return
        if fault.kind == "kill":
            kill_self(fault, f"rank {fault.rank} killed itself (SIGKILL) after step {step}")
        else:
            hang_forever(fault, step)

    def _arm(self) -> None:
        """Start the time-based faults' clocks at the first step (set-up time excluded)."""
        self._armed = True
        for fault in self._timed:
            assert fault.after is not None
            t = threading.Timer(
                fault.after,
                kill_self,
                (
                    fault,
                    f"rank {fault.rank} killed itself (SIGKILL) {fault.after:g} s into training",
                ),
            )
            t.daemon = True
            t.start()

    def _straggle(self, timer: PhaseTimer) -> None:
        """Make the compute so far take ``factor``×: sleep the difference, phase by phase.

        The target is cumulative (``factor − 1`` times the rank's own compute so far, minus what
        was injected already), so a sleep the OS stretched is paid back at the next step."""
        assert self._slow is not None
        totals = timer.totals
        injected = self._injected
        extra = {
            p: (totals[p] - injected[p]) * (self._slow - 1.0) - injected[p] for p in COMPUTE_PHASES
        }
        timer.step_start()
        for phase in COMPUTE_PHASES:
            if extra[phase] > 0:
                busy(extra[phase])
            timer.lap(phase)
        timer.step_end()
        after = timer.totals
        for p in COMPUTE_PHASES:
            injected[p] += after[p] - totals[p]


def busy(seconds: float) -> None:
    """Take ``seconds`` as slow compute would: the bulk asleep, the last 2 ms spinning (a
    sleep overshoots by ~60 µs, which on task 2a's 0.3 ms step would triple the factor)."""
    deadline = time.perf_counter() + seconds
    if seconds > 0.004:
        time.sleep(seconds - 0.002)
    while time.perf_counter() < deadline:
        pass


def injector_for(faults: list[Fault], rank: int, run_dir: Path) -> FaultInjector | None:
    """The injector this rank needs now, or None: no fault names it, or this is not the run's
    first attempt (a restarted run must not fail at the same step again, forever)."""
    mine = [f for f in faults if f.rank == rank]
    if not mine or read_restarts(run_dir):
        return None
    return FaultInjector(mine)
