"""The master's front door (``mlbench.server.guard`` and the ingest route's order of checks):
size limits and authentication before a body is read, batch size before validation, bounded
422s, upload tokens that end with their run, security headers.

The socket-level tests talk to a real ``mlbench serve`` over raw TCP: only there can a test
declare a 1 GB body, send none of it, and see whether the master answers or waits to read it.
"""

from __future__ import annotations

import io
import json
import socket
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from mlbench.server.app import BodyLimits, create_app
from mlbench.server.auth import create_token
from mlbench.server.models import Run
from mlbench.server.schemas import MAX_BATCH, MAX_ERRORS

from .master import Master


def _token(engine: Engine, scope: str = "admin", run_id: str | None = None) -> str:
    with Session(engine) as s:
        token = create_token(s, "test", scope, run_id)
        s.commit()
    return token


@pytest.fixture
def client(engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(engine)) as c:
        c.headers["Authorization"] = f"Bearer {_token(engine)}"
        yield c


def _raw(master: Master, head: str, body: bytes = b"", timeout: float = 5.0) -> tuple[int, float]:
    """Send ``head`` (request line + headers) and ``body`` over one TCP connection; the
    response's status and how long it took. A master that waits for a body it was promised
    and never gets times out here (status 0)."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", master.port), timeout=timeout) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        try:
            first = sock.recv(4096)
        except TimeoutError:
            return 0, time.monotonic() - start
    status = int(first.split(b" ", 2)[1]) if first.startswith(b"HTTP/") else -1
    return status, time.monotonic() - start


def _post_head(path: str, length: int, token: str | None = None) -> str:
    lines = [f"POST {path} HTTP/1.1", "Host: test", "Content-Type: application/json"]
    lines.append(f"Content-Length: {length}")
    if token:
        lines.append(f"Authorization: Bearer {token}")
    return "\n".join(lines) + "\n"


def test_a_declared_gigabyte_is_refused_unread(master: Master) -> None:
    """The probe's 1 GB unauthenticated POST: 413 at once, from the headers alone."""
    status, took = _raw(master, _post_head("/api/runs/r1/events", 2**30), b"{" * 65536)
    assert (status, took < 2) == (413, True)
    status, took = _raw(master, _post_head("/api/runs", 100 * 2**20, master.token))
    assert (status, took < 2) == (413, True)  # an admin's 100 MB submission too


def test_no_token_is_a_401_before_the_body_is_read(master: Master) -> None:
    """Within the size limit but unauthenticated: answered without waiting for the body."""
    status, took = _raw(master, _post_head("/api/runs/r1/events", 4 * 2**20))
    assert (status, took < 2) == (401, True)
    status, took = _raw(master, _post_head("/api/runs", 1000) + "Authorization: Bearer x\n")
    assert status in (400, 401) and took < 2


def test_a_chunked_body_is_cut_at_the_limit(engine: Engine) -> None:
    app = create_app(engine, limits=BodyLimits(other=10_000))
    token = _token(engine)

    def chunks() -> Iterator[bytes]:
        yield b'{"task": "epsilon-logreg", "overrides": ["'
        for _ in range(100):  # 100 kB, never finished: the master must stop reading at 10 kB
            yield b"x" * 1000

    with TestClient(app) as c:
        resp = c.post(
            "/api/runs",
            content=chunks(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
    assert resp.status_code == 413 and "10000 bytes" in resp.json()["detail"]


def test_too_many_events_are_refused_before_validation(engine: Engine) -> None:
    """The cap is checked first: 60,000 events (within a raised body limit) are refused in well
    under a second with a short answer, not validated one by one and echoed back."""
    app = create_app(engine, limits=BodyLimits(events=64 * 2**20))
    with Session(engine) as s:
        s.add(Run(id="r1", task="t", state="running", workers=1, backend="gloo",
                  algorithm="allreduce", goal="full", overrides=[]))  # fmt: skip
        s.commit()
    event = {"run_id": "r1", "rank": 0, "seq": 0, "time": 0.0, "step": 0, "epoch": 0.0,
             "kind": "train", "name": "loss", "value": 1.0}  # fmt: skip
    body = json.dumps({"events": [event] * 60_000})
    with TestClient(app, headers={"Authorization": f"Bearer {_token(engine)}"}) as c:
        start = time.monotonic()
        resp = c.post("/api/runs/r1/events", content=body)
        took = time.monotonic() - start
    assert resp.status_code == 413 and f"at most {MAX_BATCH}" in resp.json()["detail"]
    assert len(resp.content) < 200 and took < 1.0


def test_a_422_never_echoes_unbounded_input(client: TestClient, engine: Engine) -> None:
    bad = ["no equals sign \x01"] * 200  # 200 invalid overrides, each echoed before the fix
    resp = client.post("/api/runs", json={"task": "epsilon-logreg", "overrides": bad})
    assert resp.status_code == 422
    detail = resp.json()["detail"]
    assert len(detail) == MAX_ERRORS + 1 and detail[-1]["type"] == "too_many_errors"
    assert all("type" in e and "msg" in e and "loc" in e for e in detail)
    huge = {"task": "x" * 100_000}
    resp = client.post("/api/runs", json=huge)
    assert resp.status_code == 422 and len(resp.content) < 2000


def test_an_upload_token_ends_with_its_run(client: TestClient, engine: Engine) -> None:
    run = client.post("/api/runs", json={"task": "epsilon-logreg"}).json()["runs"][0]
    upload = _token(engine, "upload", run["id"])
    event = {"run_id": run["id"], "rank": 0, "seq": 0, "time": 0.0, "step": 0, "epoch": 0.0,
             "kind": "train", "name": "loss", "value": 1.0}  # fmt: skip
    headers = {"Authorization": f"Bearer {upload}"}
    ok = client.post(f"/api/runs/{run['id']}/events", json={"events": [event]}, headers=headers)
    assert ok.status_code == 200
    assert client.post(f"/api/runs/{run['id']}/cancel").status_code == 200
    late = {**event, "seq": 1}
    refused = client.post(f"/api/runs/{run['id']}/events", json={"events": [late]}, headers=headers)
    assert refused.status_code == 403 and "cancelled" in refused.json()["detail"]
    # an admin (``mlbench import``) can still complete a finished run's events
    assert client.post(f"/api/runs/{run['id']}/events", json={"events": [late]}).status_code == 200


def test_security_headers_and_no_cdn_pages(client: TestClient) -> None:
    for path in ("/", "/api/health"):
        csp = client.get(path).headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404
    assert client.get("/openapi.json").status_code == 200


def test_a_request_never_makes_the_master_import_code(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: ``algorithm="spy:Scheme"`` was imported inside the master, then rejected."""
    marker = tmp_path / "imported"
    (tmp_path / "spy_scheme.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\nclass Scheme: ...\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    resp = client.post(
        "/api/runs", json={"task": "epsilon-logreg", "algorithm": "spy_scheme:Scheme"}
    )
    assert resp.status_code == 422 and "entry point" in resp.text
    assert not marker.exists()


def test_a_request_never_makes_the_master_read_a_file(client: TestClient, tmp_path: Path) -> None:
    """Before: a gossip mixing matrix given as a path was read on the master at submission."""
    matrix = tmp_path / "matrix.json"
    matrix.write_text("[[0.5, 0.5], [0.5, 0.5]]")
    body = {"task": "epsilon-logreg", "algorithm": "gossip", "workers": 2}
    overrides = ["algorithm.topology=custom", f"algorithm.mixing_matrix={matrix}"]
    resp = client.post("/api/runs", json={**body, "overrides": overrides})
    assert resp.status_code == 422 and resp.json()["detail"][0]["loc"] == ["body", "overrides", 1]
    inline = ["algorithm.topology=custom", "algorithm.mixing_matrix=[[0.5,0.5],[0.5,0.5]]"]
    assert client.post("/api/runs", json={**body, "overrides": inline}).status_code == 201


def test_download_never_follows_a_link_out_of_the_run_directory(
    client: TestClient, engine: Engine, tmp_path: Path
) -> None:
    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    (run_dir / "rank-0.stdout").write_text("step 1\n")
    secret = tmp_path / "secret.key"
    secret.write_text("do not export")
    (run_dir / "leak.txt").symlink_to(secret)
    with Session(engine) as s:
        s.add(Run(id="r1", task="t", state="finished", workers=1, backend="gloo",
                  algorithm="allreduce", goal="full", overrides=[],
                  executor_ref={"kind": "local", "run_dir": str(run_dir)}))  # fmt: skip
        s.commit()
    resp = client.get("/api/runs/r1/download")
    assert resp.status_code == 200
    names = zipfile.ZipFile(io.BytesIO(resp.content)).namelist()
    assert "r1/files/rank-0.stdout" in names and "r1/files/leak.txt" not in names
