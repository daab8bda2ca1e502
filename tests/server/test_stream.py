"""The live stream (Server-Sent Events) of a run's events, log lines and state."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from httpx_sse import ServerSentEvent, connect_sse
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from mlbench.server.app import create_app
from mlbench.server.auth import create_token
from mlbench.server.models import Run
from mlbench.server.stream import MAX_EVENTS, Cursor, CursorError, _log_chunk, read_from
from mlbench.telemetry.events import EventWriter, read_events

from .master import Master


@pytest.fixture
def client(engine: Engine) -> Iterator[TestClient]:
    app = create_app(engine, stream_interval=0.05)  # migrates the database
    with Session(engine) as s:
        token = create_token(s, "test")
        s.commit()
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as c:
        yield c


def _events(path: Path, run_id: str, rank: int, n: int) -> list[dict[str, Any]]:
    writer = EventWriter(path, run_id, rank)
    for i in range(n):
        writer.emit("train", "loss", 1.0 / (i + 1), step=i, epoch=i / 10)
        writer.emit("phase", "forward", 0.01, step=i, epoch=i / 10, unit="s")
    writer.close()
    return read_events(path)


def _collect(client: httpx.Client, url: str, **kw: Any) -> list[ServerSentEvent]:
    with connect_sse(client, "GET", url, **kw) as source:
        assert source.response.status_code == 200, source.response.read()
        return list(source.iter_sse())


def _finished_run_with_output(client: TestClient, engine: Engine, tmp_path: Path) -> tuple:
    run = client.post("/api/runs", json={"task": "epsilon-logreg", "workers": 2}).json()["runs"][0]
    rid = run["id"]
    records = {r: _events(tmp_path / f"e{r}.jsonl", rid, r, 30) for r in (0, 1)}
    for r in (0, 1):
        assert (
            client.post(f"/api/runs/{rid}/events", json={"events": records[r]}).status_code == 200
        )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "rank-0.stdout").write_text("epoch 1 loss 0.5\népoque 2\nno newline yet")
    (run_dir / "rank-1.stderr").write_text("warning: slow\n")
    with Session(engine) as s:
        s.get(Run, rid).executor_ref = {"kind": "local", "run_dir": str(run_dir)}  # type: ignore[union-attr]
        s.commit()
    assert client.post(f"/api/runs/{rid}/cancel").status_code == 200
    return rid, records


def test_stream_of_an_ended_run_sends_everything_then_ends(
    client: TestClient, engine: Engine, tmp_path: Path
) -> None:
    rid, records = _finished_run_with_output(client, engine, tmp_path)
    msgs = _collect(client, f"/api/runs/{rid}/stream")
    assert msgs[0].event == "state" and msgs[0].json()["state"] == "cancelled"
    assert msgs[-1].event == "end" and msgs[-1].json() == {"state": "cancelled"}
    for rank in (0, 1):
        got = [
            e
            for m in msgs
            if m.event == "events" and m.json()["rank"] == rank
            for e in m.json()["events"]
        ]
        assert [(e["seq"], e["name"], e["value"]) for e in got] == [
            (r["seq"], r["name"], r["value"]) for r in records[rank]
        ]
    logs: dict[tuple[int, str], str] = {}
    for m in msgs:
        if m.event == "log":
            key = (m.json()["rank"], m.json()["stream"])
            assert m.json()["offset"] == len(logs.get(key, "").encode())
            logs[key] = logs.get(key, "") + m.json()["text"]
    # the run has ended, so the unterminated last line is sent too
    assert logs == {
        (0, "stdout"): "epoch 1 loss 0.5\népoque 2\nno newline yet",
        (1, "stderr"): "warning: slow\n",
    }
    # only the kinds asked for, and no logs when not wanted
    phases = _collect(client, f"/api/runs/{rid}/stream", params={"kind": "phase", "logs": False})
    names = {e["name"] for m in phases if m.event == "events" for e in m.json()["events"]}
    assert names == {"forward"} and not [m for m in phases if m.event == "log"]


def test_reconnecting_with_last_event_id_resumes_without_gaps_or_repeats(
    client: TestClient, engine: Engine, tmp_path: Path
) -> None:
    rid, _ = _finished_run_with_output(client, engine, tmp_path)
    msgs = _collect(client, f"/api/runs/{rid}/stream")
    body = [m for m in msgs if m.event in ("events", "log")]
    for cut in range(len(body)):
        resumed = _collect(
            client, f"/api/runs/{rid}/stream", headers={"Last-Event-ID": body[cut].id}
        )
        rest = [(m.event, m.data) for m in resumed if m.event in ("events", "log")]
        assert rest == [(m.event, m.data) for m in body[cut + 1 :]]
    # events=false: state and logs only
    quiet = _collect(client, f"/api/runs/{rid}/stream", params={"events": False})
    assert {m.event for m in quiet} == {"state", "log", "end"}
    assert quiet[0].json()["has_logs"] is True
    # from_now: nothing of the past, only the state and the end
    now = _collect(client, f"/api/runs/{rid}/stream", params={"from_now": True})
    assert [m.event for m in now] == ["state", "end"]


@pytest.mark.parametrize(
    ("params", "headers", "field"),
    [
        ({"cursor": "1_0_0"}, {}, "cursor"),  # one rank's positions, for a 2-rank run
        ({"cursor": "x"}, {}, "cursor"),
        ({}, {"Last-Event-ID": "-1.-1_0.0_-5.0"}, "last-event-id"),
        ({"kind": "nope"}, {}, "kind"),
    ],
)
def test_bad_stream_requests_are_4xx(
    client: TestClient, engine: Engine, tmp_path: Path, params: dict, headers: dict, field: str
) -> None:
    run = client.post("/api/runs", json={"task": "epsilon-logreg", "workers": 2}).json()["runs"][0]
    resp = client.get(f"/api/runs/{run['id']}/stream", params=params, headers=headers)
    assert resp.status_code == 422 and field in str(resp.json()), resp.text
    assert client.get("/api/runs/missing/stream").status_code == 404


def test_cursor_round_trip_and_log_chunks(tmp_path: Path) -> None:
    cur = Cursor([3, -1], [10, 0], [0, 7])
    assert Cursor.parse(str(cur), 2) == cur
    with pytest.raises(CursorError):
        Cursor.parse(str(cur), 3)
    log = tmp_path / "rank-0.stdout"
    log.write_bytes(b"one\ntw")
    assert _log_chunk(log, 0, final=False) == ("one\n", 4)  # live: whole lines only
    assert _log_chunk(log, 4, final=True) == ("tw", 6)
    assert _log_chunk(tmp_path / "missing", 0, final=False) == ("", 0)
    # a multi-byte character straddling the read limit is not cut in two
    big = tmp_path / "big"
    big.write_bytes(b"a" * (64 * 1024 - 1) + "é".encode())
    text, end = _log_chunk(big, 0, final=True)
    assert end == 64 * 1024 - 1 and "\ufffd" not in text
    assert _log_chunk(big, end, final=True) == ("é", 64 * 1024 + 1)


def test_a_backlog_larger_than_one_message_is_split(client: TestClient, tmp_path: Path) -> None:
    run = client.post("/api/runs", json={"task": "epsilon-logreg"}).json()["runs"][0]
    records = _events(tmp_path / "e.jsonl", run["id"], 0, MAX_EVENTS)  # 2 events per step
    client.post(f"/api/runs/{run['id']}/events", json={"events": records})
    client.post(f"/api/runs/{run['id']}/cancel")
    msgs = [m for m in _collect(client, f"/api/runs/{run['id']}/stream") if m.event == "events"]
    assert [len(m.json()["events"]) for m in msgs] == [MAX_EVENTS, MAX_EVENTS]
    seqs = [e["seq"] for m in msgs for e in m.json()["events"]]
    assert seqs == list(range(2 * MAX_EVENTS))


def test_live_stream_from_a_real_master(master: Master, tmp_path: Path) -> None:
    """Events posted while a client listens reach it within a poll interval; many open streams
    do not starve the API of database connections; cancelling ends the stream."""
    run = httpx.post(
        f"{master.url}/api/runs", json={"task": "epsilon-logreg"}, headers=master.headers
    ).json()["runs"][0]
    url = f"{master.url}/api/runs/{run['id']}/stream"
    received: list[tuple[float, ServerSentEvent]] = []

    def listen() -> None:
        with httpx.Client(headers=master.headers, timeout=60) as c:
            for msg in _stream_iter(c, url):
                received.append((time.monotonic(), msg))

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    idle = [_open_stream(master, url) for _ in range(20)]  # more than the connection pool
    records = _events(tmp_path / "e.jsonl", run["id"], 0, 30)
    sent_at = []
    for i in range(3):
        sent_at.append(time.monotonic())
        resp = httpx.post(
            f"{url[: -len('/stream')]}/events",
            json={"events": records[i * 20 : (i + 1) * 20]},
            headers=master.headers,
            timeout=10,
        )
        assert resp.status_code == 200, resp.text
        time.sleep(1.0)
    t0 = time.monotonic()
    assert httpx.get(f"{master.url}/api/runs", headers=master.headers).status_code == 200
    assert time.monotonic() - t0 < 2.0
    httpx.post(f"{master.url}/api/runs/{run['id']}/cancel", headers=master.headers)
    listener.join(timeout=15)
    assert not listener.is_alive(), "the stream did not end when the run did"
    for c, r in idle:
        r.close()
        c.close()
    kinds = [m.event for _, m in received]
    assert kinds[0] == "state" and kinds[-1] == "end"
    batches = [(t, m.json()["events"]) for t, m in received if m.event == "events"]
    assert [e["seq"] for _, b in batches for e in b] == list(range(60))
    # each batch arrived within ~a poll interval (0.5 s) of being posted
    for (t, batch), sent in zip(batches, sent_at, strict=True):
        assert len(batch) == 20 and 0 <= t - sent < 1.5


def _stream_iter(client: httpx.Client, url: str) -> Iterator[ServerSentEvent]:
    with connect_sse(client, "GET", url) as source:
        assert source.response.status_code == 200
        yield from source.iter_sse()


def _open_stream(master: Master, url: str) -> tuple[httpx.Client, httpx.Response]:
    c = httpx.Client(headers=master.headers, timeout=30)
    r = c.send(c.build_request("GET", url), stream=True)
    assert r.status_code == 200
    return c, r


def test_positions_past_the_end_are_empty_not_errors(tmp_path: Path) -> None:
    log = tmp_path / "rank-0.stdout"
    log.write_bytes(b"abc")
    assert read_from(log, 2**53, 65536) == b"" and read_from(log, 1, 10) == b"bc"
    with pytest.raises(CursorError):
        Cursor.parse(f"{2**63}_0_0", 1)
