"""Migration 0004 on a database as release 0003 left it: a running run keeps being watched.

The 0003 rows are written with plain SQL (the ORM model is already the new one), on both SQLite
and PostgreSQL, with events that must survive the column drops (a SQLite table copy would have
cascade-deleted them).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest
from sqlalchemy import Engine, inspect, text
from sqlalchemy.orm import Session

from mlbench.server import db
from mlbench.server.executor import LocalExecutor
from mlbench.server.models import Run
from mlbench.server.scheduler import Scheduler

INSERT_0003 = text(
    "INSERT INTO runs (id, task, state, reason, workers, backend, algorithm, goal, overrides, "
    "official, created_at, started_at, run_dir, pid, pid_started) VALUES (:id, 'epsilon-logreg', "
    ":state, NULL, 1, 'auto', 'allreduce', 'full', '[]', true, :now, :now, :run_dir, :pid, "
    ":pid_started)"
)


@pytest.fixture
def launcher() -> Iterator[subprocess.Popen[bytes]]:
    """A process that looks like a local launcher of run ``alive-run`` (its command line carries
    ``--run-id alive-run``, which is what the local executor recognises)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", "--run-id", "alive-run"]
    )
    yield proc
    proc.kill()
    proc.wait()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_0004_carries_launcher_columns_into_the_executor_ref(
    engine: Engine, tmp_path: Path, launcher: subprocess.Popen[bytes]
) -> None:
    db.upgrade(engine, "0003")
    now = datetime.now(UTC)
    started = psutil.Process(launcher.pid).create_time()
    rows = [
        ("alive-run", "running", str(tmp_path / "alive-run"), launcher.pid, started),
        ("gone-run", "running", str(tmp_path / "gone-run"), _dead_pid(), 1.0),
        ("done-run", "finished", str(tmp_path / "done-run"), None, None),
        ("queued-run", "queued", None, None, None),
    ]
    with engine.begin() as conn:
        for run_id, state, run_dir, pid, pid_started in rows:
            conn.execute(
                INSERT_0003,
                {
                    "id": run_id,
                    "state": state,
                    "now": now,
                    "run_dir": run_dir,
                    "pid": pid,
                    "pid_started": pid_started,
                },
            )
        conn.execute(
            text(
                "INSERT INTO events (run_id, rank, seq, time, step, epoch, kind, name, value) "
                "VALUES ('alive-run', 0, 0, 1.0, 0, 0.0, 'train', 'loss', 0.5)"
            )
        )

    db.upgrade(engine)

    columns = {c["name"] for c in inspect(engine).get_columns("runs")}
    assert {"config", "executor_ref", "active"} <= columns
    assert not {"pid", "pid_started", "run_dir"} & columns
    with Session(engine) as s:
        alive = s.get(Run, "alive-run")
        assert alive is not None and alive.active is True
        assert alive.executor_ref == {
            "kind": "local",
            "run_id": "alive-run",
            "pid": launcher.pid,
            "started": pytest.approx(started),
            "run_dir": str(tmp_path / "alive-run"),
        }
        done = s.get(Run, "done-run")
        assert done is not None and done.active is False
        assert done.executor_ref is not None
        assert done.executor_ref["run_dir"] == str(tmp_path / "done-run")
        queued = s.get(Run, "queued-run")
        assert queued is not None and queued.executor_ref is None and queued.config is None
        assert s.execute(text("SELECT count(*) FROM events")).scalar() == 1

    # the upgraded master reconciles: the live launcher is watched again, the dead one failed
    scheduler = Scheduler(
        db.session_factory(engine),
        LocalExecutor(tmp_path, "http://127.0.0.1:1"),
        capacity_workers=1,
    )
    scheduler.reconcile()
    with Session(engine) as s:
        alive = s.get(Run, "alive-run")
        gone = s.get(Run, "gone-run")
        assert alive is not None and alive.state == "running" and alive.active
        assert gone is not None and (gone.state, gone.reason) == ("failed", "master restarted")
        assert gone.active is False


def test_0004_downgrades_to_the_launcher_columns(engine: Engine, tmp_path: Path) -> None:
    db.upgrade(engine)
    with Session(engine) as s:
        s.add(
            Run(
                id="r1",
                task="epsilon-logreg",
                state="running",
                workers=1,
                backend="auto",
                algorithm="allreduce",
                goal="full",
                overrides=[],
                active=True,
                executor_ref={"kind": "local", "run_id": "r1", "pid": 4242, "started": 2.5}
                | {"run_dir": str(tmp_path / "r1")},
            )
        )
        s.commit()
    db.downgrade(engine, "0003")
    with engine.connect() as conn:
        row = conn.execute(text("SELECT run_dir, pid, pid_started FROM runs")).one()
    assert tuple(row) == (str(tmp_path / "r1"), 4242, 2.5)
    db.upgrade(engine)  # and up again


def test_0006_adds_the_upload_status_and_downgrades(engine: Engine) -> None:
    db.upgrade(engine, "0004")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO runs (id, task, state, workers, backend, algorithm, goal, overrides, "
                "official, active) VALUES ('old', 'epsilon-logreg', 'finished', 1, 'auto', "
                "'allreduce', 'full', '[]', true, false)"
            )
        )
    db.upgrade(engine)
    assert "upload" in {c["name"] for c in inspect(engine).get_columns("runs")}
    with Session(engine) as s:
        old = s.get(Run, "old")
        assert old is not None and old.upload is None  # nobody reported its upload
        old.upload = {"complete": False, "quarantined": 1}
        s.commit()
    db.downgrade(engine, "0004")
    assert "upload" not in {c["name"] for c in inspect(engine).get_columns("runs")}
    db.upgrade(engine)


def test_0007_adds_the_sweep_id_and_downgrades(engine: Engine) -> None:
    db.upgrade(engine, "0006")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO runs (id, task, state, workers, backend, algorithm, goal, overrides, "
                "official, active) VALUES ('lone', 'epsilon-logreg', 'finished', 1, 'auto', "
                "'allreduce', 'full', '[]', true, false)"
            )
        )
    db.upgrade(engine)
    assert "sweep_id" in {c["name"] for c in inspect(engine).get_columns("runs")}
    assert "ix_runs_sweep_id" in {i["name"] for i in inspect(engine).get_indexes("runs")}
    with Session(engine) as s:
        lone = s.get(Run, "lone")
        assert lone is not None and lone.sweep_id is None  # submitted before sweeps existed
        lone.sweep_id = "s1"
        s.commit()
    db.downgrade(engine, "0006")
    assert "sweep_id" not in {c["name"] for c in inspect(engine).get_columns("runs")}
    with engine.connect() as conn:  # the run itself survives the column's removal
        assert conn.execute(text("SELECT id FROM runs")).scalars().all() == ["lone"]
    db.upgrade(engine)


def test_0008_drops_the_events_foreign_key_on_postgresql_only(engine: Engine) -> None:
    """PostgreSQL's per-row foreign-key trigger was half the ingest's insert time; the ingest
    locks the run once per batch instead. SQLite keeps the constraint (an in-process lookup)."""
    db.upgrade(engine, "0007")

    def keys() -> list[list[str]]:
        return [fk["referred_columns"] for fk in inspect(engine).get_foreign_keys("events")]

    assert keys() == [["id"]]
    db.upgrade(engine)
    assert keys() == ([] if engine.dialect.name == "postgresql" else [["id"]])
    db.downgrade(engine, "0007")
    assert keys() == [["id"]]
    db.upgrade(engine)
