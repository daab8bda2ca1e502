"""The scheduler: admits queued runs first-in-first-out within a worker capacity, launches them
through an executor, watches them, and records how they ended.

Strict FIFO: if the oldest queued run does not fit yet, younger runs wait behind it (no
starvation of large runs). A run needing more workers than the whole capacity fails at once with
that reason. On start it reconciles the runs the previous master was watching: a launcher that
is still alive (same pid *and* start time) is watched again; a gone one is recorded from its
result.json if it wrote one, else failed with reason "master restarted". Nothing stays "running"
forever.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mlbench.server.auth import create_token
from mlbench.server.executor import Executor, Handle
from mlbench.server.models import Run

log = logging.getLogger("mlbench.scheduler")


def run_argv(run: Run, data_dir: str | None) -> list[str]:
    """The ``mlbench run`` arguments that execute ``run``."""
    argv = [
        run.task,
        "--workers",
        str(run.workers),
        "--backend",
        run.backend,
        "--goal",
        run.goal,
        "--algorithm",
        run.algorithm,
    ]
    if data_dir and not any(o.startswith("data.dir=") for o in run.overrides):
        argv += ["--data-dir", data_dir]
    for item in run.overrides:
        argv += ["--set", item]
    return argv


def _read_result(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / "result.json").read_text())
    except (OSError, ValueError):
        return None


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
        self.data_dir = data_dir
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
    @staticmethod
    def _handle(run: Run) -> Handle | None:
        if run.pid is None or run.pid_started is None or run.run_dir is None:
            return None
        return Handle(run.pid, run.pid_started, Path(run.run_dir))

    def _finish(self, run: Run, default_reason: str) -> None:
        """The launcher is gone: record its result.json, or fail the run."""
        result = _read_result(Path(run.run_dir)) if run.run_dir else None
        now = datetime.now(UTC)
        if result is not None and result.get("state") in ("finished", "failed", "cancelled"):
            if run.state != "cancelled":
                run.state = result["state"]
                run.reason = result.get("reason")
            run.result = result
            run.official = bool(result.get("official"))
        elif run.state == "running":
            run.state, run.reason = "failed", default_reason
        run.finished_at = run.finished_at or now
        run.pid = None

    def reconcile(self) -> None:
        with self.sessions() as s:
            for run in s.scalars(select(Run).where(Run.state == "running")):
                handle = self._handle(run)
                if handle is None or not self.executor.alive(handle):
                    self._finish(run, "master restarted")
            s.commit()

    def tick(self) -> None:
        reap = getattr(self.executor, "reap", None)
        if reap is not None:
            reap()
        with self.sessions() as s:
            # watch: runs whose launcher exited; cancelled runs whose launcher still runs
            for run in s.scalars(select(Run).where(Run.pid.is_not(None))):
                handle = self._handle(run)
                assert handle is not None
                if not self.executor.alive(handle):
                    self._finish(run, "launcher exited without writing result.json")
                elif run.state == "cancelled":
                    self.executor.stop(handle)
            s.commit()
            # admit: strict FIFO within capacity
            busy = sum(r.workers for r in s.scalars(select(Run).where(Run.pid.is_not(None))))
            for run in s.scalars(
                select(Run).where(Run.state == "queued").order_by(Run.created_at, Run.id)
            ):
                if run.workers > self.capacity:
                    run.state, run.finished_at = "failed", datetime.now(UTC)
                    run.reason = f"needs {run.workers} workers; capacity is {self.capacity}"
                    continue
                if busy + run.workers > self.capacity:
                    break
                upload_token = create_token(s, f"upload {run.id}", "upload", run.id)
                handle = self.executor.launch(run.id, run_argv(run, self.data_dir), upload_token)
                run.state, run.started_at = "running", datetime.now(UTC)
                run.pid, run.pid_started, run.run_dir = (
                    handle.pid,
                    handle.started,
                    str(handle.run_dir),
                )
                busy += run.workers
            s.commit()
