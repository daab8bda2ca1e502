"""The ingest's insert against a concurrent run delete, on both databases: no event outlives
its run. On PostgreSQL the events table has no foreign key (migration 0008); the ingest locks
the run row once per batch and the delete locks it first, which this checks with a real
second connection."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Engine, text

from mlbench.server import db
from mlbench.server.eventstore import RunGone, _insert, insert_events
from mlbench.server.models import Run
from mlbench.server.schemas import RunRequest
from mlbench.server.services import create_runs, delete_run


def _rows(run_id: str, seq0: int, n: int) -> list[tuple]:
    return [
        (run_id, 0, q, 1.8e9 + q, q, q / 195, "train", "loss", 0.5, None)
        for q in range(seq0, seq0 + n)
    ]


def _count(engine: Engine, run_id: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM events WHERE run_id = :r"), {"r": run_id}
            ).scalar_one()
        )


def test_a_delete_waits_for_an_ingest_in_flight_and_leaves_no_orphans(engine: Engine) -> None:
    db.upgrade(engine)
    sessions = db.session_factory(engine)
    with sessions() as s:
        run_id = create_runs(s, RunRequest(task="epsilon-logreg", workers=1))[0].id
        s.commit()
    with sessions() as s:
        assert insert_events(s, engine, _rows(run_id, 0, 100)) == 100
        assert insert_events(s, engine, _rows(run_id, 50, 100)) == 50  # idempotent by seq

    # an ingest holds its transaction open (rows staged and moved, not committed) while a
    # delete starts in another connection: the delete must wait, then remove those rows too
    ingest = sessions()
    assert _insert(ingest, engine, _rows(run_id, 150, 100)) == 100
    deleted = threading.Event()

    def delete() -> None:
        with sessions() as s:
            run = s.get(Run, run_id)
            assert run is not None
            delete_run(s, run)
        deleted.set()

    deleter = threading.Thread(target=delete)
    deleter.start()
    assert not deleted.wait(1.0), "the delete did not wait for the ingest in flight"
    ingest.commit()
    ingest.close()
    deleter.join(timeout=60)
    assert deleted.is_set()
    assert _count(engine, run_id) == 0  # the in-flight batch was deleted with the run

    if engine.dialect.name == "postgresql":  # (SQLite's foreign key refuses it instead)
        with sessions() as s, pytest.raises(RunGone):
            insert_events(s, engine, _rows(run_id, 250, 10))
        assert _count(engine, run_id) == 0
