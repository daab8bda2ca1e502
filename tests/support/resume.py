"""Shared by the resume tests: cut a finished run back to a crash, and read its per-step losses.

A run that crashed at step ``crash`` after its checkpoint at ``keep`` left: the checkpoints up to
``keep``, events up to ``crash`` (the work the crash loses), no result.json. That is exactly a
finished run's directory with the later checkpoints, the later events and the result removed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from mlbench.telemetry.events import read_events


def cut_run(src: Path, dst: Path, keep: int, crash: int) -> Path:
    """A copy of run directory ``src`` at ``dst`` as a crash at step ``crash`` leaves it
    (``keep`` 0: before any checkpoint was written)."""
    shutil.copytree(src, dst)
    (dst / "result.json").unlink(missing_ok=True)
    root = dst / "checkpoints"
    for d in root.iterdir():
        if int(d.name.removeprefix("step-")) > keep:
            shutil.rmtree(d)
    assert keep == 0 or (root / f"step-{keep}" / "complete.json").is_file(), keep
    for path in dst.glob("rank-*.jsonl"):
        lines = [ln for ln in path.read_text().splitlines() if json.loads(ln)["step"] <= crash]
        path.write_text("".join(ln + "\n" for ln in lines))
    return dst


def losses_by_step(run_dir: Path, rank: int) -> dict[int, float]:
    """Per-step training losses (``train.log_every_steps=1``); for a step done twice (lost to a
    crash, then redone) the later attempt's value."""
    out: dict[int, float] = {}
    for r in read_events(run_dir / f"rank-{rank}.jsonl"):
        if r["kind"] == "train" and r["name"] == "loss":
            out[r["step"]] = r["value"]
    return out
