"""The scheduler in a real master: FIFO within capacity, execution, cancel, reconciliation."""

from __future__ import annotations

import os
import time
from typing import Any

import httpx
import psutil
from sqlalchemy import create_engine, text

from mlbench.telemetry.events import read_events

from .master import Master

A9A = ["data.dataset=a9a", "train.log_every_steps=5"]


def _submit(m: Master, **body: Any) -> list[dict[str, Any]]:
    resp = httpx.post(
        f"{m.url}/api/runs", json={"task": "epsilon-logreg", **body}, headers=m.headers
    )
    assert resp.status_code == 201, resp.text
    return list(resp.json()["runs"])


def _wait(m: Master, run_id: str, states: set[str], timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = httpx.get(f"{m.url}/api/runs/{run_id}", headers=m.headers).json()
        if run["state"] in states:
            return dict(run)
        time.sleep(0.3)
    raise AssertionError(f"run {run_id} never reached {states}: {run}")


def _stored_equal_files(m: Master, run_id: str, world: int) -> None:
    run_dir = m.home / "runs" / run_id
    expected = sorted(
        (r["rank"], r["seq"], r["step"], r["kind"], r["name"], r["value"])
        for rank in range(world)
        for r in read_events(run_dir / f"rank-{rank}.jsonl")
    )
    assert expected and m.stored(run_id) == expected


def _token_scopes(m: Master) -> list[str]:
    engine = create_engine(f"sqlite:///{m.home / 'mlbench.db'}")
    with engine.connect() as conn:
        scopes = [row[0] for row in conn.execute(text("SELECT scope FROM tokens ORDER BY id"))]
    engine.dispose()
    return scopes


def test_runs_execute_fifo_within_capacity(scheduling_master: Master) -> None:
    m = scheduling_master
    first, second = _submit(m, workers=2, goal="light", overrides=A9A, repeats=2)
    too_big = _submit(m, workers=3, overrides=A9A)[0]
    done1 = _wait(m, first["id"], {"finished", "failed"})
    done2 = _wait(m, second["id"], {"finished", "failed"})
    assert done1["state"] == done2["state"] == "finished", (done1["reason"], done2["reason"])
    # capacity 2: the second 2-worker run started only after the first ended
    assert done2["started_at"] >= done1["finished_at"]
    assert done1["result"]["goal"]["reached"] is True
    assert done1["result"]["summary"]["final_metrics"]["accuracy"] >= 80.0
    _stored_equal_files(m, first["id"], 2)
    # the runs' upload tokens were revoked when they ended (only the admin token is left)
    assert _token_scopes(m) == ["admin"]
    failed = _wait(m, too_big["id"], {"failed"})
    assert failed["reason"] == "needs 3 workers; capacity is 2"


def test_cancel_a_running_run(scheduling_master: Master) -> None:
    m = scheduling_master
    [run] = _submit(m, workers=2, overrides=[*A9A, "train.max_epochs=500", "goal=full"])
    _wait(m, run["id"], {"running"})
    time.sleep(3)
    assert (
        httpx.post(f"{m.url}/api/runs/{run['id']}/cancel", headers=m.headers).json()["state"]
        == "cancelled"
    )
    deadline = time.monotonic() + 60
    while httpx.get(f"{m.url}/api/runs/{run['id']}", headers=m.headers).json()["result"] is None:
        assert time.monotonic() < deadline, "launcher never stopped"
        time.sleep(0.3)
    final = httpx.get(f"{m.url}/api/runs/{run['id']}", headers=m.headers).json()
    assert final["state"] == "cancelled" and final["result"]["state"] == "cancelled"
    assert not [
        p
        for p in psutil.process_iter(["cmdline"])
        if run["id"] in " ".join(p.info["cmdline"] or [])
    ]


def test_restart_reconciles_running_runs(scheduling_master: Master) -> None:
    m = scheduling_master
    [alive] = _submit(m, workers=1, overrides=[*A9A, "train.max_epochs=3", "goal=full"])
    [gone] = _submit(m, workers=1, overrides=[*A9A, "train.max_epochs=500", "goal=full"])
    _wait(m, alive["id"], {"running"})
    _wait(m, gone["id"], {"running"})
    m.kill()  # the master dies; launchers live in their own sessions
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if f"--run-id {gone['id']}" in cmd:
            proc.kill()  # this one dies while the master is down, leaving no result
    m.start()
    assert _wait(m, gone["id"], {"failed"})["reason"] == "master restarted"
    survivor = _wait(m, alive["id"], {"finished", "failed"})
    assert survivor["state"] == "finished", survivor["reason"]
    # a 1-worker run gets threads for its share of the capacity (2), not every core: runs
    # admitted side by side must not oversubscribe the machine
    assert survivor["result"]["launcher"]["threads_per_worker"] == max(
        1, (os.cpu_count() or 1) // 2
    )
    _stored_equal_files(m, alive["id"], 1)


class _Ended:
    """An executor whose runs have all ended, leaving ``result``."""

    def __init__(self, result: dict[str, Any]) -> None:
        self.result = result

    def alive(self, ref: dict[str, Any]) -> bool:
        return False

    def outcome(self, ref: dict[str, Any]) -> dict[str, Any]:
        return self.result


def test_the_upload_status_in_result_json_reaches_the_run(engine: Any) -> None:
    """A launcher that could not tell the master how its upload ended wrote it in result.json;
    the scheduler records it from there when the launcher exits."""
    from sqlalchemy.orm import Session

    from mlbench.server import db
    from mlbench.server.models import Run
    from mlbench.server.scheduler import Scheduler

    db.upgrade(engine)
    upload = {"complete": False, "uploaded": 0, "quarantined": 1, "pending": 3, "reason": "x"}
    result = {"schema_version": 1, "state": "finished", "official": True, "upload": upload}
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
                executor_ref={"kind": "test"},
            )
        )
        s.commit()
    Scheduler(db.session_factory(engine), _Ended(result), capacity_workers=1).tick()  # type: ignore[arg-type]
    with Session(engine) as s:
        run = s.get(Run, "r1")
        assert run is not None and run.state == "finished"
        assert run.upload == {**upload, "drain_seconds": None, "stored": 0}
