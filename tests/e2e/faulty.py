"""Fault-injecting algorithm plug-ins (loaded via ``--algorithm tests.e2e.faulty:Class``).

They behave like all-reduce SGD until step ``FAULT_STEP`` on rank ``FAULT_RANK`` (env vars), then
raise or die — exercising the launcher's failure handling through the real plug-in path.
"""

from __future__ import annotations

import os
import signal

import torch

from mlbench.algorithms.allreduce import AllReduce


class _Faulty(AllReduce):
    steps = 0

    def _due(self) -> bool:
        self.steps += 1
        return self.dist.rank == int(os.environ.get("FAULT_RANK", "1")) and self.steps == int(
            os.environ.get("FAULT_STEP", "3")
        )


class RaiseAtStep(_Faulty):
    def after_step(self, model: torch.nn.Module) -> None:
        if self._due():
            raise RuntimeError("injected failure for the test")
        super().after_step(model)


class KillAtStep(_Faulty):
    def after_step(self, model: torch.nn.Module) -> None:
        if self._due():
            os.kill(os.getpid(), signal.SIGKILL)
        super().after_step(model)


class NotAnAlgorithm:
    pass


class LongNameAtStep(_Faulty):
    """All-reduce SGD whose rank ``FAULT_RANK`` writes, at step ``FAULT_STEP``, one record with a
    65-character metric name straight into its event file — what a writer from before the
    record limits (or a foreign one) let through, and what the master refuses (issue 12.3)."""

    def after_step(self, model: torch.nn.Module) -> None:
        if self._due():
            _write_foreign_record("m" * 65, self.steps)
        super().after_step(model)


def _write_foreign_record(name: str, step: int) -> None:
    """Bypass ``make_record``'s checks: take the rank's writer's next seq under its lock and
    write the line by hand, so numbering stays dense and nothing interleaves."""
    import gc
    import json
    import time

    from mlbench.telemetry.events import EventWriter

    writer = next(o for o in gc.get_objects() if isinstance(o, EventWriter) and o._fh)
    with writer._lock:
        record = {"run_id": writer.run_id, "rank": writer.rank, "seq": writer.seq}
        record |= {"time": time.time(), "step": step, "epoch": 0.0, "kind": "train"}
        record |= {"name": name, "value": 1.0}
        assert writer._fh is not None
        writer._fh.write(json.dumps(record, separators=(",", ":")) + "\n")
        writer.seq += 1
