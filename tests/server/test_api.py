"""The master's REST API on real databases (a SQLite file and PostgreSQL), a fresh DB per test."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, inspect, select
from sqlalchemy.orm import Session

from mlbench.server import db
from mlbench.server.app import create_app
from mlbench.server.auth import create_token
from mlbench.server.models import Event, Run, Token
from mlbench.server.states import InvalidTransition, transition
from mlbench.telemetry.events import EventWriter, read_events


def _token(engine: Engine, scope: str = "admin", run_id: str | None = None) -> str:
    with Session(engine) as s:
        token = create_token(s, "test", scope, run_id)
        s.commit()
    return token


@pytest.fixture
def client(engine: Engine) -> Iterator[TestClient]:
    app = create_app(engine)
    with TestClient(app, headers={"Authorization": f"Bearer {_token(engine)}"}) as c:
        yield c


def _create(client: TestClient, **body: object) -> dict:
    resp = client.post("/api/runs", json={"task": "epsilon-logreg", **body})
    assert resp.status_code == 201, resp.text
    return resp.json()["runs"][0]


def test_health_and_schema(client: TestClient, engine: Engine) -> None:
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["database"] == engine.dialect.name
    assert {"runs", "events", "alembic_version"} <= set(inspect(engine).get_table_names())
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/runs", "/api/runs/{run_id}/events", "/api/runs/{run_id}/series"} <= set(paths)


def test_migrations_are_idempotent(engine: Engine) -> None:
    db.upgrade(engine)
    db.upgrade(engine)
    with engine.connect() as conn:
        version = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    cfg = Config()
    cfg.set_main_option("script_location", str(db.MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert version == head and head is not None and int(head) >= 3


def test_tasks_come_from_the_registry(client: TestClient) -> None:
    tasks = {t["name"]: t for t in client.get("/api/tasks").json()}
    assert tasks["cifar10-resnet20"]["target"]["value"] == 80.0
    assert tasks["epsilon-logreg"]["target"]["light_value"] == 80.0


def test_create_get_list_runs(client: TestClient) -> None:
    run = _create(client, workers=2, goal="light")
    assert run["state"] == "queued" and run["workers"] == 2 and run["official"] is True
    assert client.get(f"/api/runs/{run['id']}").json() == run
    other = _create(client, overrides=["data.dataset=a9a"])
    assert other["official"] is False  # a closed-division override
    sweep = client.post(
        "/api/runs", json={"task": "cifar10-resnet20", "workers_sweep": [1, 2, 4], "repeats": 2}
    ).json()["runs"]
    assert sorted(r["workers"] for r in sweep) == [1, 1, 2, 2, 4, 4]
    listed = client.get("/api/runs", params={"task": "cifar10-resnet20"}).json()["runs"]
    assert len(listed) == 6
    assert len(client.get("/api/runs", params={"official": "false"}).json()["runs"]) == 1
    assert len(client.get("/api/runs", params={"state": "queued"}).json()["runs"]) == 8
    assert client.get("/api/runs", params={"state": "running"}).json()["runs"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"task": "nope"}, "task"),
        ({"task": "epsilon-logreg", "workers": 0}, "workers"),
        ({"task": "epsilon-logreg", "overrides": ["optim.lr=fast"]}, "overrides"),
        ({"task": "epsilon-logreg", "overrides": ["nokey"]}, "overrides"),
        ({"task": "epsilon-logreg", "algorithm": "nope"}, "algorithm"),
        (
            {
                "task": "epsilon-logreg",
                "algorithm": "powersgd",
                "overrides": ["algorithm.matrix_rank=0"],
            },
            "overrides",
        ),
        ({"task": "epsilon-logreg", "goal": "medium"}, "goal"),
        ({"workers": 2}, "task"),
    ],
)
def test_bad_run_requests_name_the_field(client: TestClient, body: dict, field: str) -> None:
    resp = client.post("/api/runs", json=body)
    assert resp.status_code == 422
    assert any(field in err["loc"] for err in resp.json()["detail"]), resp.json()
    assert client.get("/api/runs").json()["runs"] == []


def test_config_errors_point_at_the_exact_override(client: TestClient) -> None:
    body = {"task": "epsilon-logreg", "overrides": ["train.max_steps=5", "optim.lr=fast"]}
    detail = client.post("/api/runs", json=body).json()["detail"]
    assert detail[0]["loc"] == ["body", "overrides", 1] and "optim.lr" in detail[0]["msg"]
    # a valid option that this worker count rules out: the option's line is blamed
    body = {
        "task": "epsilon-logreg",
        "algorithm": "gossip",
        "workers": 2,
        "overrides": ["train.max_steps=5", "algorithm.topology=torus"],
    }
    detail = client.post("/api/runs", json=body).json()["detail"]
    assert detail[0]["loc"] == ["body", "overrides", 1] and "torus" in detail[0]["msg"]
    body = {"task": "epsilon-logreg", "algorithm": "gossip", "workers_sweep": [4, 2]}
    body["overrides"] = ["algorithm.topology=torus"]
    detail = client.post("/api/runs", json=body).json()["detail"]
    assert detail[0]["loc"] == ["body", "overrides", 0]  # 4 is fine, 2 is not


def test_state_machine_cancel_and_delete(client: TestClient, engine: Engine) -> None:
    run = _create(client)
    assert client.get("/api/runs/missing").status_code == 404
    cancelled = client.post(f"/api/runs/{run['id']}/cancel").json()
    assert cancelled["state"] == "cancelled" and cancelled["finished_at"]
    assert client.post(f"/api/runs/{run['id']}/cancel").status_code == 409
    running = _create(client)
    with Session(engine) as s:
        r = s.get(Run, running["id"])
        transition(r, "running")
        s.commit()
    assert client.delete(f"/api/runs/{running['id']}").status_code == 409
    assert client.delete(f"/api/runs/{run['id']}").status_code == 204
    assert client.get(f"/api/runs/{run['id']}").status_code == 404


def test_transition_rules() -> None:
    run = Run(id="r", state="queued")
    transition(run, "running")
    assert run.started_at is not None
    transition(run, "failed", "rank 1 died")
    assert run.reason == "rank 1 died" and run.finished_at is not None
    for target in ("running", "finished", "queued", "cancelled"):
        with pytest.raises(InvalidTransition):
            transition(run, target)


def _worker_events(tmp_path: Path, run_id: str, rank: int, n: int) -> list[dict]:
    writer = EventWriter(tmp_path / f"rank-{rank}.jsonl", run_id, rank)
    for i in range(n):
        writer.emit("train", "loss", 1.0 / (i + 1), step=i, epoch=i / 10)
        writer.emit("phase", "forward", 0.01 * i, step=i, epoch=i / 10, unit="s")
    writer.emit("train", "loss", float("nan"), step=n, epoch=n / 10)  # diverged: stored as null
    writer.close()
    return read_events(tmp_path / f"rank-{rank}.jsonl")


def _stored(engine: Engine, run_id: str) -> list[tuple]:
    with Session(engine) as s:
        rows = s.execute(
            select(
                Event.rank,
                Event.seq,
                Event.time,
                Event.step,
                Event.epoch,
                Event.kind,
                Event.name,
                Event.value,
                Event.unit,
            )
            .where(Event.run_id == run_id)
            .order_by(Event.rank, Event.seq)
        )
        return [tuple(r) for r in rows]


def test_ingest_is_idempotent_and_equals_the_worker_files(
    client: TestClient, engine: Engine, tmp_path: Path
) -> None:
    run = _create(client, workers=2)
    records = _worker_events(tmp_path, run["id"], 0, 50) + _worker_events(
        tmp_path, run["id"], 1, 50
    )
    url = f"/api/runs/{run['id']}/events"
    first = client.post(url, json={"events": records[:120]}).json()
    assert first == {"received": 120, "inserted": 120}
    # a retry that overlaps what was stored, as an uploader catching up from its file would send
    second = client.post(url, json={"events": records[100:]}).json()
    assert second == {"received": len(records) - 100, "inserted": len(records) - 120}
    assert client.post(url, json={"events": records}).json()["inserted"] == 0
    expected = sorted(
        (
            r["rank"],
            r["seq"],
            r["time"],
            r["step"],
            r["epoch"],
            r["kind"],
            r["name"],
            r["value"],
            r.get("unit"),
        )
        for r in records
    )
    assert _stored(engine, run["id"]) == expected
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(Event)) == len(records)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda e: e.update(kind="metric"), "kind"),
        (lambda e: e.update(value="high"), "value"),
        (lambda e: e.update(rank=-1), "rank"),
        (lambda e: e.update(rank=1), "events[0].rank"),  # the run has 1 rank
        (lambda e: e.update(run_id="other"), "events[0].run_id"),
        (lambda e: e.pop("seq"), "seq"),
        (lambda e: e.update(name="loss\x00"), "name"),
    ],
)
def test_bad_events_are_rejected_whole(
    client: TestClient, engine: Engine, tmp_path: Path, mutate, field: str
) -> None:
    run = _create(client)
    records = _worker_events(tmp_path, run["id"], 0, 2)
    mutate(records[0])
    resp = client.post(f"/api/runs/{run['id']}/events", json={"events": records})
    assert resp.status_code == 422
    assert field in str(resp.json()["detail"])
    assert _stored(engine, run["id"]) == []
    assert client.post("/api/runs/missing/events", json={"events": []}).status_code == 404


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (b'{"events": [', ["body"]),  # malformed JSON (the message gives the column)
        (b"[]", ["body"]),  # not an object
        (b'{"event": []}', ["body", "events"]),  # missing
        (b'{"events": [{}]}', ["body", "events", 0, "run_id"]),
        # Python's json writes NaN/Infinity literals; they must not be stored as numbers
        (b'{"events": [EVENT, "value": NaN}]}', ["body", "events", 0, "value"]),
        (b'{"events": [EVENT, "value": 1e400}]}', ["body", "events", 0, "value"]),
        (b'{"events": [EVENT, "value": -Infinity}]}', ["body", "events", 0, "value"]),
    ],
)
def test_an_unparsable_batch_is_a_422_located_in_the_body(
    client: TestClient, body: bytes, loc: list
) -> None:
    """The ingest endpoint parses its bytes itself (for speed); its errors must look like every
    other endpoint's: FastAPI's list of {loc, msg, type}, loc starting with "body"."""
    run = _create(client)
    event = {"run_id": run["id"], "rank": 0, "seq": 0, "time": 0.0, "step": 0, "epoch": 0.0}
    event |= {"kind": "train", "name": "loss"}
    resp = client.post(
        f"/api/runs/{run['id']}/events",
        content=body.replace(b"EVENT", json.dumps(event)[:-1].encode()),
        headers={"Content-Type": "application/json"},
    )
    assert resp.status_code == 422, resp.text
    detail = resp.json()["detail"]
    assert detail[0]["loc"] == loc and detail[0]["msg"] and detail[0]["type"], detail


def test_series_is_downsampled_per_rank(client: TestClient, tmp_path: Path) -> None:
    run = _create(client, workers=2)
    url = f"/api/runs/{run['id']}/events"
    for rank in (0, 1):
        records = _worker_events(tmp_path, run["id"], rank, 1000)
        client.post(url, json={"events": records})
    full = client.get(
        f"/api/runs/{run['id']}/series",
        params={"kind": "train", "name": "loss", "rank": 0, "max_points": 5000},
    ).json()
    assert list(full["ranks"]) == ["0"] and len(full["ranks"]["0"]) == 1001
    assert full["ranks"]["0"][0] == [0, 0.0, pytest.approx(full["ranks"]["0"][0][2]), 1.0]
    assert full["ranks"]["0"][-1][3] is None  # the NaN loss, kept as null
    small = client.get(
        f"/api/runs/{run['id']}/series",
        params={"kind": "train", "name": "loss", "max_points": 100},
    ).json()["ranks"]
    for points in small.values():
        assert 90 <= len(points) <= 101  # ≤ max_points, plus the rank's last point
        steps = [p[0] for p in points]
        assert steps == sorted(steps) and steps[0] == 0
        assert steps[-1] == 1000  # the latest value is always there
    since = full["ranks"]["0"][500][2]
    later = client.get(
        f"/api/runs/{run['id']}/series",
        params={"kind": "train", "name": "loss", "rank": 0, "since": since, "max_points": 5000},
    ).json()["ranks"]["0"]
    assert all(p[2] > since for p in later) and len(later) < 1001
    bad = client.get(f"/api/runs/{run['id']}/series", params={"kind": "x", "name": "loss"})
    assert bad.status_code == 422


def test_writes_need_a_token_and_the_right_scope(engine: Engine, tmp_path: Path) -> None:
    app = create_app(engine)
    admin = {"Authorization": f"Bearer {_token(engine)}"}
    with TestClient(app) as anon:
        assert anon.get("/api/health").status_code == 200  # probes stay open
        run = anon.post("/api/runs", json={"task": "epsilon-logreg"}, headers=admin).json()
        run_id = run["runs"][0]["id"]
        other_id = anon.post("/api/runs", json={"task": "epsilon-logreg"}, headers=admin).json()[
            "runs"
        ][0]["id"]
        # missing or invalid token: 401
        assert anon.post("/api/runs", json={"task": "epsilon-logreg"}).status_code == 401
        bad = {"Authorization": "Bearer mlb_not-a-token"}
        assert anon.post(f"/api/runs/{run_id}/cancel", headers=bad).status_code == 401
        assert anon.get("/api/runs").status_code == 401  # reads are closed by default
        # an upload token may post events for its own run only, and nothing else
        upload = {"Authorization": f"Bearer {_token(engine, 'upload', run_id)}"}
        events = _worker_events(tmp_path, run_id, 0, 3)
        assert (
            anon.post(
                f"/api/runs/{run_id}/events", json={"events": events}, headers=upload
            ).status_code
            == 200
        )
        assert (
            anon.post(
                f"/api/runs/{other_id}/events", json={"events": []}, headers=upload
            ).status_code
            == 403
        )
        assert anon.post(f"/api/runs/{run_id}/cancel", headers=upload).status_code == 403
        assert anon.get("/api/runs", headers=upload).status_code == 403
        assert anon.delete(f"/api/runs/{run_id}", headers=admin).status_code == 204
    # tokens are stored hashed: the plaintext appears nowhere in the database
    with Session(engine) as s:
        stored = [row for row in s.execute(select(Token.token_hash, Token.name))]
        assert stored and all(not h.startswith("mlb_") and len(h) == 64 for h, _ in stored)


def test_reads_can_be_opened(engine: Engine) -> None:
    with TestClient(create_app(engine, open_reads=True)) as anon:
        assert anon.get("/api/runs").status_code == 200
        assert anon.get("/api/tasks").status_code == 200
        assert anon.post("/api/runs", json={"task": "epsilon-logreg"}).status_code == 401


def test_creation_order_is_strict_for_fifo(client: TestClient, engine: Engine) -> None:
    # runs submitted within the same second (and several in one request) keep submission order
    ids = [_create(client)["id"] for _ in range(3)]
    ids += [
        r["id"]
        for r in client.post("/api/runs", json={"task": "epsilon-logreg", "repeats": 3}).json()[
            "runs"
        ]
    ]
    with Session(engine) as s:
        ordered = list(s.scalars(select(Run.id).order_by(Run.created_at)))
        stamps = list(s.scalars(select(Run.created_at).order_by(Run.created_at)))
    assert ordered == ids
    assert len(set(stamps)) == len(stamps)


NUL = "a\x00b"


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "field"),
    [
        ("get", "/api/runs/{run}%00", {}, "run_id"),
        ("get", "/api/runs/" + "r" * 65, {}, "run_id"),
        ("get", "/api/runs", {"params": {"task": NUL}}, "task"),
        ("post", "/api/runs", {"json": {"task": "epsilon-logreg", "algorithm": NUL}}, "algorithm"),
        ("post", "/api/runs", {"json": {"task": "t" * 65}}, "task"),
        (
            "post",
            "/api/runs",
            {"json": {"task": "epsilon-logreg", "overrides": [NUL]}},
            "overrides",
        ),
        ("get", "/api/runs/{run}/series", {"params": {"kind": "train", "name": NUL}}, "name"),
        (
            "get",
            "/api/runs/{run}/series",
            {"params": {"kind": "train", "name": "loss", "rank": 2**40}},
            "rank",
        ),
        ("get", "/api/runs", {"params": {"offset": 2**63}}, "offset"),
        ("get", "/api/runs/{run}/logs", {"params": {"offset": 2**63}}, "offset"),
        ("post", "/api/runs/{run}/events", {"event": {"name": NUL}}, "name"),
        ("post", "/api/runs/{run}/events", {"event": {"unit": "s\x00"}}, "unit"),
        ("post", "/api/runs/import", {"import": {"task": NUL}}, "result"),
        ("post", "/api/runs/import", {"import": {"backend": "b" * 17}}, "result"),
        ("post", "/api/runs/import", {"import": {"goal": "light"}}, None),  # not a dict: default
        ("post", "/api/runs/import", {"import": {"world_size": 2**40}}, "result"),
        ("post", "/api/runs/import", {"import": {"schema_version": "1"}}, "result"),
    ],
)
def test_hostile_input_is_a_4xx_naming_the_field(
    client: TestClient, method: str, path: str, kwargs: dict, field: str | None
) -> None:
    """What PostgreSQL refuses (NUL in text, over-long varchar, past-64-bit integers) must be
    stopped by validation on both databases, never reach the database as a 500."""
    run = _create(client)
    path = path.format(run=run["id"])
    if "event" in kwargs:
        event = {
            "run_id": run["id"],
            "rank": 0,
            "seq": 0,
            "time": 0.0,
            "step": 0,
            "epoch": 0.0,
            "kind": "train",
            "name": "loss",
            "value": 1.0,
            **kwargs.pop("event"),
        }
        kwargs["json"] = {"events": [event]}
    if "import" in kwargs:
        result = {"schema_version": 1, "state": "finished", "task": "epsilon-logreg"}
        kwargs["json"] = {"run_id": "imported-1", "result": {**result, **kwargs.pop("import")}}
    resp = getattr(client, method)(path, **kwargs)
    if field is None:
        assert resp.status_code == 200, resp.text
        return
    assert resp.status_code == 422, resp.text
    assert field in str(resp.json()["detail"]), resp.json()


def test_algorithms_and_settings_for_the_run_form(client: TestClient) -> None:
    from mlbench.algorithms.base import scheme_options
    from mlbench.algorithms.localsgd import LocalSGDConfig
    from mlbench.registry import algorithm_names, get_algorithm

    algos = {a["name"]: a for a in client.get("/api/algorithms").json()}
    assert list(algos) == algorithm_names()
    for a in algos.values():
        assert a["summary"], a["name"]
        # exactly the scheme's own section, nothing of another scheme's
        own = [f"algorithm.{k}" for k in scheme_options(get_algorithm(a["name"]))]
        assert [o["key"] for o in a["options"]] == own, a["name"]
    assert algos["powersgd"]["options"][0]["key"] == "algorithm.matrix_rank"
    assert algos["localsgd"]["options"][-1] == {
        "key": "algorithm.local_steps",
        "default": LocalSGDConfig().local_steps,
        "open": False,
        "help": LocalSGDConfig.__dataclass_fields__["local_steps"].metadata["help"],
    }
    settings = client.get("/api/settings").json()
    assert settings["scheduler"] is False and settings["capacity_workers"] is None


def test_metrics_and_exact_phase_totals(client: TestClient, tmp_path: Path) -> None:
    run = _create(client, workers=2)
    for rank in (0, 1):
        records = _worker_events(tmp_path, run["id"], rank, 100 * (rank + 1))
        client.post(f"/api/runs/{run['id']}/events", json={"events": records})
    listed = client.get(f"/api/runs/{run['id']}/metrics").json()["metrics"]
    assert listed == [
        {"kind": "phase", "name": "forward", "unit": "s", "count": 300},
        {"kind": "train", "name": "loss", "unit": None, "count": 302},
    ]
    phases = client.get(f"/api/runs/{run['id']}/phases").json()
    # forward of step i took 0.01*i s: sum over i < n is 0.005 n (n - 1)
    assert phases["ranks"]["0"]["forward"] == pytest.approx(0.005 * 100 * 99)
    assert phases["ranks"]["1"]["forward"] == pytest.approx(0.005 * 200 * 199)
    assert phases["last_step"] == {"0": 99, "1": 199}
    early = client.get(f"/api/runs/{run['id']}/phases", params={"until_step": 9}).json()
    assert early["ranks"]["0"]["forward"] == pytest.approx(0.005 * 10 * 9)
    assert early["last_step"] == {"0": 9, "1": 9}
    assert client.get("/api/runs/nope/phases").status_code == 404


def test_a_full_batch_is_one_request_on_both_databases(client: TestClient, engine: Engine) -> None:
    """10,000 events × 10 columns is past PostgreSQL's 65,535 bind parameters if each value is
    one parameter (it was a 500); the insert must not depend on the batch size."""
    run = _create(client)
    events = [
        {
            "run_id": run["id"],
            "rank": 0,
            "seq": i,
            "time": 1.0 + i,
            "step": i,
            "epoch": i / 1e4,
            "kind": "train",
            "name": "loss",
            "value": 1.0 / (i + 1),
            "unit": None,
        }
        for i in range(10_000)
    ]
    url = f"/api/runs/{run['id']}/events"
    assert client.post(url, json={"events": events}).json() == {
        "received": 10_000,
        "inserted": 10_000,
    }
    assert client.post(url, json={"events": events[-10:]}).json()["inserted"] == 0
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(Event)) == 10_000
    # down-sampled evenly in steps, first and last included
    pts = client.get(
        f"/api/runs/{run['id']}/series", params={"kind": "train", "name": "loss", "max_points": 101}
    ).json()["ranks"]["0"]
    steps = [p[0] for p in pts]
    assert steps[0] == 0 and steps[-1] == 9_999 and len(steps) == 101
    gaps = {b - a for a, b in itertools.pairwise(steps[:-1])}
    assert gaps <= {99, 100}  # ⌊9999·i/100⌋ apart
    since = client.get(
        f"/api/runs/{run['id']}/series",
        params={"kind": "train", "name": "loss", "since": 1.0 + 9_989, "max_points": 5},
    ).json()["ranks"]["0"]
    assert [p[0] for p in since] == [9_990, 9_992, 9_994, 9_996, 9_998, 9_999]


def test_upload_status_is_recorded_checked_and_shown(
    engine: Engine, client: TestClient, tmp_path: Path
) -> None:
    """``PUT /api/runs/{id}/upload``: the uploader's report, checked against the events stored;
    RunOut says it, listed runs too, and the run's result carries the same."""
    run = _create(client, workers=2)
    url = f"/api/runs/{run['id']}"
    assert run["upload"] is None  # nobody has reported yet
    events = _worker_events(tmp_path, run["id"], 0, 4)  # 9 records
    client.post(f"{url}/events", json={"events": events})
    partial = {"complete": False, "uploaded": 9, "quarantined": 1, "pending": 0}
    partial |= {"reason": "1 record(s) refused by the master", "drain_seconds": 0.05}
    out = client.put(f"{url}/upload", json=partial)
    assert out.status_code == 200, out.text
    assert out.json()["upload"] == {**partial, "stored": 9, "parts": None}
    assert client.get(url).json()["upload"]["complete"] is False
    assert client.get("/api/runs").json()["runs"][0]["upload"]["quarantined"] == 1
    # a report of complete is believed only when the events are here
    claim = {"complete": True, "uploaded": 12, "quarantined": 0, "pending": 0, "reason": None}
    upload = client.put(f"{url}/upload", json=claim).json()["upload"]
    assert upload["complete"] is False and "holds 9 of the run's 12" in upload["reason"]
    done = client.put(f"{url}/upload", json=claim | {"uploaded": 9}).json()
    assert done["upload"]["complete"] is True and done["upload"]["stored"] == 9
    # who may report: admin or this run's upload token; others are refused
    other = _create(client)
    with TestClient(create_app(engine)) as anon:
        assert anon.put(f"{url}/upload", json=claim).status_code == 401
        foreign = {"Authorization": f"Bearer {_token(engine, 'upload', other['id'])}"}
        assert anon.put(f"{url}/upload", json=claim, headers=foreign).status_code == 403
        own = {"Authorization": f"Bearer {_token(engine, 'upload', run['id'])}"}
        assert (
            anon.put(f"{url}/upload", json=claim | {"uploaded": 9}, headers=own).status_code == 200
        )
    assert client.put("/api/runs/missing/upload", json=claim).status_code == 404
    bad = client.put(f"{url}/upload", json=claim | {"pending": -1})
    assert bad.status_code == 422 and "pending" in bad.text


def test_each_nodes_report_counts_and_a_late_complete_one_hides_nothing(
    client: TestClient, tmp_path: Path
) -> None:
    """A multi-node run: each node's agent reports only its own ranks. The master keeps every
    report and sums them; the run is complete only when every node's part is."""
    run = _create(client, workers=2)
    url = f"/api/runs/{run['id']}"
    for rank in (0, 1):
        client.post(f"{url}/events", json={"events": _worker_events(tmp_path, run["id"], rank, 2)})
    assert stored_total(client, url) == 10  # events of both ranks are here (5 records each)
    base = {"quarantined": 0, "pending": 0, "reason": None}
    node1 = {**base, "complete": False, "uploaded": 3, "pending": 4, "reason": "master down"}
    client.put(f"{url}/upload", json={**node1, "ranks": [1]})
    up = client.put(f"{url}/upload", json={**base, "complete": True, "uploaded": 7, "ranks": [0]})
    got = up.json()["upload"]
    assert got["complete"] is False, got  # node 0's later report does not hide node 1's
    assert got["uploaded"] == 10 and got["pending"] == 4
    assert got["reason"] == "ranks 1: master down"
    assert set(got["parts"]) == {"0", "1"} and got["parts"]["0"]["complete"] is True
    # node 1 retried and finished: every part complete (and the events are here) → complete
    fixed = {**base, "complete": True, "uploaded": stored_total(client, url) - 7, "ranks": [1]}
    done = client.put(f"{url}/upload", json=fixed).json()["upload"]
    assert done["complete"] is True and done["reason"] is None, done
    # a whole-run report (mlbench import) replaces the parts
    whole = {**base, "complete": True, "uploaded": done["uploaded"]}
    assert client.put(f"{url}/upload", json=whole).json()["upload"]["parts"] is None
    # a node's ranks are kept as compact ranges
    ranks = [5, 2, 3, 4, 9]
    ranged = client.put(f"{url}/upload", json={**base, "complete": True, "ranks": ranks})
    assert set(ranged.json()["upload"]["parts"]) == {"2-5,9"}


def stored_total(client: TestClient, url: str) -> int:
    return sum(m["count"] for m in client.get(f"{url}/metrics").json()["metrics"])


def test_an_imported_result_brings_its_upload_status(client: TestClient) -> None:
    result = {"schema_version": 1, "state": "finished", "task": "epsilon-logreg", "world_size": 1}
    upload = {"complete": False, "uploaded": 0, "quarantined": 2, "pending": 5, "reason": "down"}
    run = client.post(
        "/api/runs/import", json={"run_id": "imp-1", "result": result | {"upload": upload}}
    )
    assert run.status_code == 200, run.text
    assert run.json()["upload"] == {**upload, "drain_seconds": None, "stored": 0, "parts": None}
    assert run.json()["result"]["upload"]["quarantined"] == 2
    # a result that claims a complete upload of events this master does not hold is not believed
    claim = upload | {"complete": True, "uploaded": 40, "quarantined": 0, "pending": 0}
    again = client.post(
        "/api/runs/import", json={"run_id": "imp-1", "result": result | {"upload": claim}}
    )
    assert again.json()["upload"]["complete"] is False
    plain = client.post("/api/runs/import", json={"run_id": "imp-2", "result": result}).json()
    assert plain["upload"] is None  # a local run without upload facts


def test_an_import_never_overwrites_a_live_run_or_rewrites_how_a_run_ended(
    client: TestClient, engine: Engine
) -> None:
    """Before: ``/api/runs/import`` overwrote any run, whatever its state (item 9 of the probe)."""
    live = _create(client)
    with Session(engine) as s:  # as the scheduler leaves a run it admitted
        run = s.get(Run, live["id"])
        assert run is not None
        transition(run, "running")
        run.active = True
        s.commit()
    result = {"schema_version": 1, "state": "finished", "task": "epsilon-logreg", "world_size": 1}
    over = client.post("/api/runs/import", json={"run_id": live["id"], "result": result})
    assert over.status_code == 409 and "is running on this master" in over.json()["detail"]
    assert client.get(f"/api/runs/{live['id']}").json()["state"] == "running"
    done = client.post("/api/runs/import", json={"run_id": "imp-x", "result": result})
    assert done.status_code == 200
    failed = result | {"state": "failed", "reason": "rewritten"}
    turned = client.post("/api/runs/import", json={"run_id": "imp-x", "result": failed})
    assert turned.status_code == 409 and "cannot make it failed" in turned.json()["detail"]
    again = client.post("/api/runs/import", json={"run_id": "imp-x", "result": result})
    assert again.status_code == 200 and again.json()["state"] == "finished"
