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
