"""The scheduler: admits queued runs first-in-first-out within a worker capacity, launches them
through an executor, watches them, and records how they ended.

Strict FIFO: if the oldest queued run does not fit yet, younger runs wait behind it (no
starvation of large runs). A run needing more workers than the whole capacity fails at once with
that reason. On start it reconciles the runs the previous master was watching: a run whose
executor still runs it is watched again; a gone one is recorded from its result if it wrote one,
else failed with reason "master restarted". Nothing stays "running" forever.

What the scheduler does *not* know: how an executor runs things. It hands the executor the run's
stored resolved config and keeps the reference the executor returns (``runs.executor_ref``)
without reading it; ``runs.active`` is its own flag for "the executor may still hold this run".
Every state change goes through ``mlbench.server.states.transition``, the table the API uses.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mlbench.errors import MlbenchError
from mlbench.server.auth import create_token, revoke_upload_tokens
from mlbench.server.executor import Executor
from mlbench.server.models import Run
from mlbench.server.services import record_upload_from_result, run_config
from mlbench.server.states import TERMINAL_STATES, RunState, transition

log = logging.getLogger("mlbench.scheduler")


class Scheduler:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        executor: Executor,
        *,
        capacity_workers: int,
        data_dir: str | None = None,
        poll_seconds: float = 0.5,
    ) -> None:
        self.sessions, self.executor = sessions, executor
        self.capacity = capacity_workers
        self.data_dir = data_dir  # only for runs queued before configs were stored (0004)
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self.reconcile()
        self._thread = threading.Thread(target=self._loop, name="mlbench-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # keep scheduling; the next tick retries
                log.exception("scheduler tick failed")
            self._stop.wait(self.poll_seconds)

    # ------------------------------------------------------------------ one pass
    def _alive(self, run: Run) -> bool:
        return run.executor_ref is not None and self.executor.alive(run.executor_ref)

    def _finish(self, s: Session, run: Run, default_reason: str) -> None:
        """The executor no longer runs it: record its result (and how its upload ended), or
        fail the run."""
        ref = run.executor_ref
        result = self.executor.outcome(ref) if ref else None
        state = result.get("state") if result is not None else None
        if result is not None and isinstance(state, str) and state in TERMINAL_STATES:
            if run.state == RunState.RUNNING:
                transition(run, state, result.get("reason"))
            run.result = result
            run.official = bool(result.get("official"))
            record_upload_from_result(s, run)
        elif run.state == RunState.RUNNING:
            # the launcher's own words (e.g. an unwritable run directory) beat a generic reason
            error = self.executor.failure(ref) if ref else None
            reason = f"launcher failed: {error}" if error else default_reason
            transition(run, RunState.FAILED, reason)
        run.finished_at = run.finished_at or datetime.now(UTC)
        run.active = False
        revoke_upload_tokens(s, run.id)  # its launcher has exited: nothing left to send

    def reconcile(self) -> None:
        with self.sessions() as s:
            for run in s.scalars(select(Run).where(Run.state == RunState.RUNNING)):
                if not self._alive(run):
                    self._finish(s, run, "master restarted")
            s.commit()

    def tick(self) -> None:
        reap = getattr(self.executor, "reap", None)
        if reap is not None:
            reap()
        with self.sessions() as s:
            # watch: runs whose executor is done with them; cancelled runs it still runs
            for run in s.scalars(select(Run).where(Run.active)):
                if not self._alive(run):
                    self._finish(s, run, "launcher exited without writing result.json")
                elif run.state == RunState.CANCELLED:
                    assert run.executor_ref is not None
                    self.executor.stop(run.executor_ref)
            s.commit()
            # admit: strict FIFO within capacity
            busy = sum(r.workers for r in s.scalars(select(Run).where(Run.active)))
            for run in s.scalars(
                select(Run).where(Run.state == RunState.QUEUED).order_by(Run.created_at, Run.id)
            ):
                if run.workers > self.capacity:
                    reason = f"needs {run.workers} workers; capacity is {self.capacity}"
                    transition(run, RunState.FAILED, reason)
                    continue
                if busy + run.workers > self.capacity:
                    break
                try:
                    config = run_config(run, self.data_dir)
                except MlbenchError as exc:  # a pre-0004 run whose config no longer resolves
                    transition(run, RunState.FAILED, f"config does not resolve: {exc}")
                    continue
                transition(run, RunState.RUNNING)  # before launching: a refused move starts nothing
                upload_token = create_token(s, f"upload {run.id}", "upload", run.id)
                run.executor_ref = self.executor.launch(
                    run.id, config, run.workers, run.backend, upload_token
                )
                run.config = config
                run.active = True
                busy += run.workers
            s.commit()
