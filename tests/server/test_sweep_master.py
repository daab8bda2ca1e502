"""Sweeps on a master: the runs carry their sweep id (stored, returned, filterable with
``GET /api/runs?sweep=ID``), and ``mlbench sweep --master`` submits, follows and records them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from mlbench.server.app import create_app
from mlbench.server.auth import create_token

from ..e2e.helpers import mlbench
from .master import Master


@pytest.fixture
def client(engine: Engine) -> Iterator[TestClient]:
    app = create_app(engine)  # migrates the database
    with Session(engine) as s:
        token = create_token(s, "test", "admin", None)
        s.commit()
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as c:
        yield c


def test_runs_carry_and_filter_by_sweep_id(client: TestClient) -> None:
    body = {"task": "epsilon-logreg", "workers_sweep": [1, 2], "sweep_id": "s-1"}
    created = client.post("/api/runs", json=body).json()["runs"]
    assert [r["sweep_id"] for r in created] == ["s-1", "s-1"]
    other = client.post("/api/runs", json={"task": "epsilon-logreg", "sweep_id": "s-2"})
    lone = client.post("/api/runs", json={"task": "epsilon-logreg"}).json()["runs"][0]
    assert lone["sweep_id"] is None
    listed = client.get("/api/runs", params={"sweep": "s-1"}).json()["runs"]
    assert {r["id"] for r in listed} == {r["id"] for r in created}
    assert client.get("/api/runs", params={"sweep": "nope"}).json()["runs"] == []
    assert len(client.get("/api/runs").json()["runs"]) == 4
    one = other.json()["runs"][0]
    assert client.get(f"/api/runs/{one['id']}").json()["sweep_id"] == "s-2"
    bad = client.post("/api/runs", json={"task": "epsilon-logreg", "sweep_id": "../x"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "sweep_id"]
    assert client.get("/api/runs", params={"sweep": "a" * 65}).status_code == 422


def test_sweep_on_a_master(scheduling_master: Master, tmp_path: Path) -> None:
    m = scheduling_master
    sweeps = tmp_path / "sweeps"
    argv = ["sweep", "epsilon-logreg", "--set", "data.dataset=a9a", "--goal", "light"]
    argv += ["--set", "train.max_epochs=2", "--workers", "1", "--repeats", "2"]
    argv += ["--master", m.url, "--sweeps-dir", str(sweeps), "--sweep-id", "ms-1"]
    proc = mlbench(*argv, home=tmp_path, MLBENCH_TOKEN=m.token, MLBENCH_SWEEP_POLL="0.3")
    assert proc.returncode == 0, proc.stderr
    data = json.loads((sweeps / "ms-1" / "sweep.json").read_text())
    assert data["master"] == m.url and data["runs_dir"] == str(sweeps / "ms-1" / "runs")
    points = data["points"]
    assert [(e["point"], e["repeat"], e["seed"], e["state"]) for e in points] == [
        ("w1-allreduce", 0, 42, "finished"),
        ("w1-allreduce", 1, 43, "finished"),
    ]
    on_master = httpx.get(f"{m.url}/api/runs", params={"sweep": "ms-1"}, headers=m.headers)
    runs = {r["id"]: r for r in on_master.json()["runs"]}
    assert set(runs) == {e["run_id"] for e in points}
    for e in points:
        run = runs[e["run_id"]]
        assert run["sweep_id"] == "ms-1" and run["state"] == "finished"
        assert f"seed={e['seed']}" in run["overrides"]
        assert run["result"]["environment"]["seed"] == e["seed"]
        # the result is kept under the sweep, beside run.json's sweep membership
        local = Path(e["run_dir"])
        assert json.loads((local / "result.json").read_text()) == run["result"]
        launch = json.loads((local / "run.json").read_text())
        assert launch["sweep"] == {"id": "ms-1", "point": e["point"], "repeat": e["repeat"]}

    # resumed: nothing finished is submitted again
    again = mlbench(
        "sweep",
        "--resume",
        "ms-1",
        "--sweeps-dir",
        str(sweeps),
        home=tmp_path,
        MLBENCH_TOKEN=m.token,
    )
    assert again.returncode == 0, again.stderr
    assert "0 of 2 runs" in again.stderr
    listed = httpx.get(f"{m.url}/api/runs", headers=m.headers).json()["runs"]
    assert len(listed) == 2
