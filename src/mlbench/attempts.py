"""A run's attempts: the record of every restart, shared by the engines and the training loop.

A run that fails and is restarted from its last checkpoint (``--max-restarts``), or that a user
continues with ``mlbench run --resume``, is still *one* run: its clock never pauses (MLPerf's
rule), so time-to-target includes the work lost since the checkpoint and the restart itself.
Whoever restarts the ranks appends one line to ``RUN/attempts.jsonl``; the loop of the next
attempt reads the file to continue the clock and to account the cost, and the run summary lists
the restarts. The file is append-only JSON lines, one object per restart, so a crash while
writing loses at most the line being written (a torn last line is ignored).

This module sits in the bottom layer: engines (``launch/``) write it, the loop (``train/``)
reads it, neither imports the other.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: set to "1" in a rank's environment when it must continue from the run's last checkpoint
RESUME_ENV = "MLBENCH_RESUME"
ATTEMPTS_FILE = "attempts.jsonl"


@dataclass(frozen=True)
class Restart:
    """One restart of a run.

    ``failed_at`` is when the previous attempt was seen to end (unix seconds), ``restarted_at``
    when the new attempt's ranks were started; ``reason`` says why (the failing rank's error, or
    "resumed by user"); ``attempt`` counts from 1 for the first restart. ``steps_at_failure``:
    each rank's steps done when the failure was seen (``{"0": 150, ...}``, from the ranks'
    heartbeats; empty when unknown) — the events stop at the last flushed log window, so without
    it the steps after that window would not count as lost work.
    """

    attempt: int
    reason: str
    failed_at: float
    restarted_at: float
    by: str  # "engine" (--max-restarts) or "user" (mlbench run --resume)
    steps_at_failure: dict[str, int] = field(default_factory=dict)


def record_restart(
    run_dir: Path,
    reason: str,
    failed_at: float,
    *,
    by: str,
    steps_at_failure: dict[str, int] | None = None,
) -> Restart:
    """Append one restart to ``RUN/attempts.jsonl`` (fsynced: the next attempt reads it)."""
    restart = Restart(
        attempt=len(read_restarts(run_dir)) + 1,
        reason=reason,
        failed_at=failed_at,
        restarted_at=time.time(),
        by=by,
        steps_at_failure=dict(steps_at_failure or {}),
    )
    path = run_dir / ATTEMPTS_FILE
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(asdict(restart), sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return restart


def read_restarts(run_dir: Path) -> list[Restart]:
    """Every complete restart line of ``RUN/attempts.jsonl`` (none when the file is absent)."""
    path = run_dir / ATTEMPTS_FILE
    if not path.exists():
        return []
    out: list[Restart] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            data: dict[str, Any] = json.loads(line)
            out.append(Restart(**data))
        except (ValueError, TypeError):
            continue  # a torn last line from a crash while appending
    return out
