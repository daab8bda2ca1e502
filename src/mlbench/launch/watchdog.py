"""The hang watchdog: the node agent's check that its ranks still make progress.

Each rank's heartbeat thread (:mod:`mlbench.telemetry.heartbeat`) says how long its step count
has not moved while it was training, and where its main thread is. The agent asks
:meth:`Watchdog.check` on every poll (it reads the files at most once per beat interval); once a
live rank has stalled for ``train.hang_timeout`` seconds the answer is the run's failure reason,
naming the rank(s) stuck outside a collective — the cause — apart from those waiting in one for
them. ``train.hang_timeout = 0`` (or null) turns the watchdog and the heartbeats off.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlbench.telemetry.heartbeat import heartbeat_interval, read_heartbeat, stalled_for


def hang_timeout_of(run_dir: Path) -> float | None:
    """``train.hang_timeout`` from the run's config.json; None when off or unreadable."""
    try:
        value = json.loads((Path(run_dir) / "config.json").read_text())["train"]["hang_timeout"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return float(value) if value else None


class Watchdog:
    def __init__(self, run_dir: Path, timeout: float) -> None:
        self.run_dir, self.timeout = Path(run_dir), timeout
        self.every = heartbeat_interval(timeout)
        self._next = 0.0

    def check(self, ranks: Sequence[int], pids: Sequence[int | None]) -> str | None:
        """None while every live rank progresses; else why the run is hung. ``pids[i]`` is rank
        ``ranks[i]``'s live process (None: exited) — a beat left by an earlier attempt's
        process is not this one's."""
        now_mono = time.monotonic()
        if now_mono < self._next:
            return None
        self._next = now_mono + self.every
        now = time.time()
        beats: list[tuple[int, dict[str, Any], float]] = []
        for rank, pid in zip(ranks, pids, strict=True):
            beat = read_heartbeat(self.run_dir, rank) if pid is not None else None
            if beat is None or beat.get("pid") != pid:
                continue  # exited, or not beating yet (starting up)
            beats.append((rank, beat, stalled_for(beat, now)))
        if not any(stall >= self.timeout for _, _, stall in beats):
            return None
        return self._reason(beats)

    def _reason(self, beats: list[tuple[int, dict[str, Any], float]]) -> str:
        worst = max(stall for _, _, stall in beats)
        stuck = [
            f"rank {r} stalled at step {b.get('step')} outside any collective "
            f"({b.get('phase')}: in {b.get('where') or 'an unknown place'})"
            for r, b, stall in beats
            if stall >= self.timeout and b.get("phase") != "collective"
        ]
        waiting = [
            f"rank {r} at step {b.get('step')}"
            for r, b, _ in beats
            if b.get("phase") == "collective"
        ]
        parts = stuck or ["no rank of this node is stuck outside a collective"]
        if waiting:
            parts.append(f"waiting in a collective: {', '.join(waiting)}")
        return (
            f"hang: no training progress for {worst:.0f} s (train.hang_timeout={self.timeout:g}): "
            + "; ".join(parts)
        )
