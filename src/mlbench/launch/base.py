"""The launcher seam (DESIGN §4): one interface every engine implements.

An engine starts a run's ranks from a prepared run directory, reports whether they are done, stops
them, and says where each rank's output is. Everything around that — checking the request,
creating the run directory, uploading events, writing the final result — is the
:class:`~mlbench.launch.session.LaunchSession`'s, shared by the CLI and the master's scheduler,
so a new engine (Slurm, Kubernetes) is one file implementing :class:`Launcher`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

POLL_SECONDS = 0.1


@dataclass
class Outcome:
    """How a run ended, as the engine saw it (the ranks' own records are in the run directory)."""

    state: str  # finished | failed | cancelled
    reason: str | None
    exit_codes: list[int | None]
    wall_time: float


class Launcher(Protocol):
    """Start, poll, stop, logs → outcome. ``poll`` returns None while the run goes on; on the
    first failed rank the engine stops the others itself and returns ``failed`` with that rank's
    reason."""

    run_dir: Path

    def start(self) -> None: ...

    def poll(self) -> Outcome | None: ...

    def stop(self, reason: str = "interrupted by user (Ctrl-C)") -> Outcome: ...

    def logs(self, rank: int) -> tuple[Path, Path]: ...


def wait(launcher: Launcher, on_tick: Callable[[], None] | None = None) -> Outcome:
    """Poll ``launcher`` until its run ends; Ctrl-C (or SIGTERM turned into it) stops every rank
    and records the run as cancelled."""
    try:
        while True:
            outcome = launcher.poll()
            if outcome is not None:
                return outcome
            if on_tick is not None:
                on_tick()
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        return launcher.stop()
