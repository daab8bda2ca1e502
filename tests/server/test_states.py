"""The run state machine, and that the API and the scheduler both go through it.

The scheduler runs here against a fake executor (no processes): it returns a reference of its own
kind, and the test checks the scheduler hands that reference back untouched.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from mlbench.server import states
from mlbench.server.app import create_app
from mlbench.server.auth import create_token
from mlbench.server.models import Run
from mlbench.server.scheduler import Scheduler
from mlbench.server.states import (
    TERMINAL_STATES,
    TRANSITIONS,
    InvalidTransition,
    RunState,
    transition,
)


def _run(state: str) -> Run:
    return Run(id="r", state=state)


@pytest.mark.parametrize(("start", "target"), list(itertools.product(RunState, RunState)))
def test_transition_table(start: RunState, target: RunState) -> None:
    run = _run(start.value)
    if target in TRANSITIONS.get(start, frozenset()):
        transition(run, target, "why")
        assert run.state == target.value and isinstance(run.state, str)
        assert (run.started_at is not None) == (target is RunState.RUNNING)
        assert (run.finished_at is not None) == (target in TERMINAL_STATES)
    else:
        with pytest.raises(InvalidTransition, match=f"cannot become {target}"):
            transition(run, target)
        assert run.state == start.value and run.finished_at is None


def test_terminal_states_are_final_and_unknown_states_refused() -> None:
    assert set(TERMINAL_STATES) == {RunState.FINISHED, RunState.FAILED, RunState.CANCELLED}
    assert not set(TRANSITIONS) & TERMINAL_STATES
    with pytest.raises(InvalidTransition):
        transition(_run("queued"), "paused")
    with pytest.raises(InvalidTransition):
        transition(_run("exploded"), "failed")


class FakeExecutor:
    """Launches nothing; remembers what it was given and answers from a dict."""

    def __init__(self) -> None:
        self.launched: list[tuple[str, dict[str, Any], int, str]] = []
        self.running: set[str] = set()
        self.results: dict[str, dict[str, Any]] = {}
        self.failures: dict[str, str] = {}
        self.stopped: list[dict[str, Any]] = []

    def launch(
        self, run_id: str, config: dict[str, Any], workers: int, backend: str, upload_token: str
    ) -> dict[str, Any]:
        assert upload_token.startswith("mlb_")
        self.launched.append((run_id, config, workers, backend))
        self.running.add(run_id)
        return {"kind": "fake", "ticket": f"t-{run_id}", "nested": {"opaque": [1, 2]}}

    def alive(self, ref: dict[str, Any]) -> bool:
        assert ref["kind"] == "fake" and ref["nested"] == {"opaque": [1, 2]}
        return ref["ticket"].removeprefix("t-") in self.running

    def stop(self, ref: dict[str, Any]) -> None:
        self.stopped.append(ref)

    def outcome(self, ref: dict[str, Any]) -> dict[str, Any] | None:
        return self.results.get(ref["ticket"].removeprefix("t-"))

    def failure(self, ref: dict[str, Any]) -> str | None:
        return self.failures.get(ref["ticket"].removeprefix("t-"))


@pytest.fixture
def client(engine: Engine) -> Iterator[TestClient]:
    app = create_app(engine)  # migrates the empty database
    with Session(engine) as s:
        token = create_token(s, "test")
        s.commit()
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as c:
        yield c


def _submit(client: TestClient, **body: Any) -> list[dict[str, Any]]:
    resp = client.post("/api/runs", json={"task": "epsilon-logreg", **body})
    assert resp.status_code == 201, resp.text
    return list(resp.json()["runs"])


def test_scheduler_launches_the_stored_config_and_keeps_the_ref_opaque(
    client: TestClient, engine: Engine
) -> None:
    fake = FakeExecutor()
    sched = Scheduler(_sessions(engine), fake, capacity_workers=2)
    [first] = _submit(client, workers=2, goal="light", overrides=["train.max_steps=3"])
    [second] = _submit(client, workers=1)
    [too_big] = _submit(client, workers=3)
    sched.tick()
    # FIFO within capacity 2: the 2-worker run, not the younger 1-worker one
    assert [r for r, *_ in fake.launched] == [first["id"]]
    _, config, workers, backend = fake.launched[0]
    assert (workers, backend) == (2, "auto")
    assert config["task"] == "epsilon-logreg" and config["goal"] == "light"
    assert config["train"]["max_steps"] == 3 and config["algorithm"]["name"] == "allreduce"
    got = client.get(f"/api/runs/{first['id']}").json()
    assert got["state"] == "running" and got["started_at"]
    assert client.get(f"/api/runs/{too_big['id']}").json()["state"] == "queued"  # behind
    with Session(engine) as s:
        stored = s.get(Run, first["id"])
        assert stored is not None and stored.active and stored.config == config
        assert stored.executor_ref == {
            "kind": "fake",
            "ticket": f"t-{first['id']}",
            "nested": {"opaque": [1, 2]},
        }
    # the run ends with a result; the next tick records it and admits the next run
    fake.running.discard(first["id"])
    fake.results[first["id"]] = {"state": "finished", "official": False, "reason": None}
    sched.tick()
    done = client.get(f"/api/runs/{first['id']}").json()
    assert (
        done["state"] == "finished" and done["finished_at"] and done["result"]["official"] is False
    )
    assert [r for r, *_ in fake.launched] == [first["id"], second["id"]]
    too_big = client.get(f"/api/runs/{too_big['id']}").json()
    assert (too_big["state"], too_big["reason"]) == ("failed", "needs 3 workers; capacity is 2")
    # cancelled through the API: the scheduler stops it through the executor, with its ref
    assert client.post(f"/api/runs/{second['id']}/cancel").json()["state"] == "cancelled"
    sched.tick()
    assert fake.stopped == [
        {"kind": "fake", "ticket": f"t-{second['id']}", "nested": {"opaque": [1, 2]}}
    ]
    assert client.delete(f"/api/runs/{second['id']}").status_code == 409  # still active
    fake.running.discard(second["id"])
    sched.tick()
    assert client.delete(f"/api/runs/{second['id']}").status_code == 204


def _sessions(engine: Engine) -> Any:
    from mlbench.server.db import session_factory

    return session_factory(engine)


def test_api_and_scheduler_consult_the_same_table(
    client: TestClient, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forbid a move in ``states.TRANSITIONS`` and both writers refuse it."""
    a, b = _submit(client, repeats=2)
    monkeypatch.setitem(states.TRANSITIONS, RunState.QUEUED, frozenset({RunState.FAILED}))
    assert client.post(f"/api/runs/{a['id']}/cancel").status_code == 409
    fake = FakeExecutor()
    with pytest.raises(InvalidTransition, match="cannot become running"):
        Scheduler(_sessions(engine), fake, capacity_workers=4).tick()
    assert fake.launched == []  # checked before anything starts
    monkeypatch.undo()
    assert client.post(f"/api/runs/{b['id']}/cancel").json()["state"] == "cancelled"


def test_a_launcher_that_failed_without_a_result_records_its_reason(
    client: TestClient, engine: Engine
) -> None:
    fake = FakeExecutor()
    sched = Scheduler(_sessions(engine), fake, capacity_workers=2)
    [told, silent] = _submit(client, repeats=2)
    sched.tick()
    assert [r for r, *_ in fake.launched] == [told["id"], silent["id"]]
    fake.running.clear()
    fake.failures[told["id"]] = "cannot write the run directory /m/r: Not a directory"
    sched.tick()
    got = client.get(f"/api/runs/{told['id']}").json()
    assert (got["state"], got["reason"]) == (
        "failed",
        "launcher failed: cannot write the run directory /m/r: Not a directory",
    )
    got = client.get(f"/api/runs/{silent['id']}").json()
    assert (got["state"], got["reason"]) == (
        "failed",
        "launcher exited without writing result.json",
    )
