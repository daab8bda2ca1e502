"""A rank's heartbeat: its progress and where its main thread is, for the hang watchdog.

Why: a rank that stops (a deadlock, a lost GPU, an injected ``hang``) makes every peer block in
the next collective, and gloo gives up only after its collective timeout — minutes, with an error
that names no culprit. The node agent's watchdog (``mlbench.launch.watchdog``) reads these files
and ends the run after ``train.hang_timeout`` seconds without progress, naming the rank that
stalled outside a collective and the ones that wait in one.

A :class:`Heartbeat` thread in each worker, every ``interval`` seconds (at most 1 s), reads the
loop's :class:`~mlbench.train.loop.LoopPosition` (the steps done; no cost to the loop) and the
main thread's Python stack (``sys._current_frames``: where it is, without its cooperation), and
overwrites ``RUN/rank-<r>.heartbeat`` in place (one ``pwrite`` of a fixed-size, space-padded
record on a descriptor kept open: 1 µs, where a write to a temporary file and a rename cost
1.7 ms here; a reader that catches a record mid-write sees invalid JSON and skips the check)::

    {"rank", "pid", "time", "step", "phase", "where", "stalled_for"}

``phase`` is ``setup`` (no step started yet), ``eval``, ``checkpoint``, ``collective`` (inside
torch.distributed or the run's process-group helpers, or blocked on an async collective's
``work.wait()``), ``fault`` (an injected hang), ``train`` (anywhere else in training — also a
wait the Python stack cannot see into, such as DDP's reducer inside backward) or ``done``.
``stalled_for`` counts the seconds the step count has not moved while the rank was training:
set-up, evaluation and checkpoints are not stalls (they may legitimately take long on big
tasks), so the clock restarts there. A rank whose heartbeat
file itself stops changing (a process frozen with the interpreter lock held) is stalled by the
file's age.

Cost: one stack walk (5–50 µs) and one ``pwrite`` per interval, on a thread that sleeps in
between; the training thread does nothing (docs/faults.md has the measured numbers).
"""

from __future__ import annotations

import contextlib
import json
import linecache
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

HEARTBEAT_FILE = "rank-{}.heartbeat"
RECORD_BYTES = 1024  # every beat is padded to this size, so a shorter one leaves no old tail
#: phases in which a rank is not expected to finish steps: the stall clock does not run there
RESTING = frozenset({"setup", "eval", "checkpoint", "done"})
# what the frames say, innermost first: the loop's methods by name (strings, not imports)
_EVAL, _CHECKPOINT, _STEP = "_evaluate", "_checkpoint", "_train_step"
_COLLECTIVE_FILES = (f"torch{os.sep}distributed{os.sep}", f"mlbench{os.sep}dist.py")
_FAULT_FILE = f"mlbench{os.sep}train{os.sep}faults.py"

Position = Callable[[], tuple[int, float]]


def heartbeat_path(run_dir: Path, rank: int) -> Path:
    return Path(run_dir) / HEARTBEAT_FILE.format(rank)


def heartbeat_interval(hang_timeout: float) -> float:
    """How often to beat: ten beats per timeout, at most one a second, at least 20 a second."""
    return max(0.05, min(1.0, hang_timeout / 10.0))


def classify(frame: FrameType | None, step: int) -> tuple[str, str]:
    """(phase, where) of a thread whose innermost frame is ``frame``."""
    where = ours = ""
    names: list[str] = []
    collective = fault = False
    depth = 0
    f = frame
    while f is not None:
        code = f.f_code
        if not where:
            where = f"{code.co_name} ({_short(code.co_filename)}:{f.f_lineno})"
        if not ours and f"{os.sep}mlbench{os.sep}" in code.co_filename:
            ours = f"{code.co_name} ({_short(code.co_filename)}:{f.f_lineno})"
        names.append(code.co_name)
        if depth < 12 and any(p in code.co_filename for p in _COLLECTIVE_FILES):
            collective = True
        # f_lineno is None for a frame between instructions (3.11): no line to read then
        line = linecache.getline(code.co_filename, f.f_lineno) if f.f_lineno else ""
        if depth == 0 and ".wait(" in line:
            collective = True  # blocked on an async collective's handle (``work.wait()``)
        if _FAULT_FILE in code.co_filename:
            fault = True
        depth += 1
        f = f.f_back
    if ours and ours != where:  # where in our code it came from, when it is deeper elsewhere
        where = f"{where} via {ours}"
    if fault:
        return "fault", where
    if _EVAL in names:
        return "eval", where
    if _CHECKPOINT in names:
        return "checkpoint", where
    if collective:
        return "collective", where
    if step == 0 and _STEP not in names:
        return "setup", where
    return "train", where


def _short(path: str) -> str:
    parts = Path(path).parts
    return "/".join(parts[-3:])


class Heartbeat:
    """The thread that keeps ``RUN/rank-<r>.heartbeat`` current (see the module docstring)."""

    def __init__(self, run_dir: Path, rank: int, position: Position, interval: float) -> None:
        self.path = heartbeat_path(run_dir, rank)
        self.rank, self.position, self.interval = rank, position, interval
        self._main = threading.get_ident()  # the thread to watch: the one that made us
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_step = -1
        self._progress_at = time.time()
        self._fd: int | None = None

    def start(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
        self.beat()
        self._thread = threading.Thread(target=self._loop, name="mlbench-heartbeat", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            # one failed beat is skipped, never the thread's end: a heartbeat that stops makes a
            # healthy rank look stalled (the watchdog reads the file's age)
            with contextlib.suppress(Exception):
                self.beat()

    def beat(self, phase: str | None = None) -> dict[str, Any]:
        now = time.time()
        step, _ = self.position()
        where = ""
        if phase is None:
            phase, where = classify(sys._current_frames().get(self._main), step)
        if len(where) > 600:  # the record's fixed size holds it
            where = where[:597] + "..."
        if step != self._last_step or phase in RESTING:
            self._last_step, self._progress_at = step, now
        beat = {
            "rank": self.rank,
            "pid": os.getpid(),
            "time": now,
            "step": step,
            "phase": phase,
            "where": where,
            "stalled_for": round(now - self._progress_at, 3),
        }
        if self._fd is not None:
            data = json.dumps(beat).encode("utf-8", "replace")[:RECORD_BYTES]
            os.pwrite(self._fd, data.ljust(RECORD_BYTES), 0)
        return beat

    def stop(self) -> None:
        """End the thread and leave a last beat that says the rank is done training."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with contextlib.suppress(OSError):
            self.beat("done")
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def read_heartbeat(run_dir: Path, rank: int) -> dict[str, Any] | None:
    try:
        data = json.loads(heartbeat_path(run_dir, rank).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def stalled_for(beat: dict[str, Any], now: float) -> float:
    """Seconds without progress as of ``now``: the beat's own count plus the beat's age (which
    keeps growing when the beats themselves stop). A rank done training is never stalled."""
    if beat.get("phase") == "done":
        return 0.0
    return float(beat.get("stalled_for", 0.0)) + max(0.0, now - float(beat["time"]))
