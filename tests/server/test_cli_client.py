"""The CLI against a real master: submit with run --master, status, download, cancel, delete."""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import httpx

from mlbench.telemetry.events import read_events

from ..e2e.helpers import mlbench
from .master import Master


def test_submit_watch_download_delete(scheduling_master: Master, tmp_path: Path) -> None:
    m = scheduling_master
    env = {"MLBENCH_TOKEN": m.token, "MLBENCH_MASTER": m.url}
    submitted = mlbench(
        "run",
        "epsilon-logreg",
        "--workers",
        "2",
        "--goal",
        "light",
        "--set",
        "data.dataset=a9a",
        "--master",
        m.url,
        "--json",
        home=tmp_path,
        **env,
    )
    assert submitted.returncode == 0, submitted.stderr
    [run] = json.loads(submitted.stdout)
    assert run["state"] == "queued" and run["goal"] == "light" and run["workers"] == 2
    deadline = time.monotonic() + 180
    while True:
        status = mlbench("status", run["id"], "--json", home=tmp_path, **env)
        assert status.returncode == 0, status.stderr
        state = json.loads(status.stdout)["state"]
        if state in ("finished", "failed"):
            break
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert state == "finished"
    listed = json.loads(mlbench("status", "--json", home=tmp_path, **env).stdout)
    assert [r["id"] for r in listed] == [run["id"]]
    table = mlbench("status", home=tmp_path, COLUMNS="250", **env)
    assert run["id"] in table.stdout and "finished" in table.stdout

    out = tmp_path / "run.zip"
    dl = mlbench("download", run["id"], "-o", str(out), home=tmp_path, **env)
    assert dl.returncode == 0, dl.stderr
    with zipfile.ZipFile(out) as zf:
        names = set(zf.namelist())
        result = json.loads(zf.read(f"{run['id']}/result.json"))
        assert result["goal"]["reached"] is True
        run_dir = m.home / "runs" / run["id"]
        for rank in (0, 1):
            from_db = [
                json.loads(line)
                for line in zf.read(f"{run['id']}/events/rank-{rank}.jsonl").splitlines()
            ]
            from_file = read_events(run_dir / f"rank-{rank}.jsonl")
            assert [(e["seq"], e["name"], e["value"]) for e in from_db] == [
                (e["seq"], e["name"], e["value"]) for e in from_file
            ]
        assert f"{run['id']}/files/rank-1.stderr" in names
    logs = httpx.get(
        f"{m.url}/api/runs/{run['id']}/logs", params={"rank": 0}, headers=m.headers
    ).json()
    assert logs["next_offset"] == len(logs["text"].encode())

    again = mlbench("cancel", run["id"], home=tmp_path, **env)
    assert again.returncode == 2 and "HTTP 409" in again.stderr  # a finished run stays finished
    assert mlbench("delete", run["id"], home=tmp_path, **env).returncode == 0
    gone = mlbench("status", run["id"], home=tmp_path, **env)
    assert gone.returncode == 2 and "HTTP 404" in gone.stderr


def test_client_errors_are_one_line(scheduling_master: Master, tmp_path: Path) -> None:
    m = scheduling_master
    no_token = mlbench("status", "--master", m.url, home=tmp_path)
    assert no_token.returncode == 2 and "set $MLBENCH_TOKEN" in no_token.stderr
    bad = mlbench(
        "run",
        "epsilon-logreg",
        "--set",
        "optim.lr=fast",
        "--master",
        m.url,
        home=tmp_path,
        MLBENCH_TOKEN=m.token,
    )
    assert bad.returncode == 2 and "overrides" in bad.stderr and "optim.lr" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    down = mlbench("status", "--master", "http://127.0.0.1:9", home=tmp_path)
    assert down.returncode == 2 and "unreachable" in down.stderr


def test_token_create_list_revoke(master: Master) -> None:
    home = master.home
    made = mlbench("token", "create", "--name", "ci-bot", home=home)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    auth = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{master.url}/api/runs", headers=auth).status_code == 200
    listed = mlbench("token", "list", "--json", home=home)
    rows = json.loads(listed.stdout)
    assert [r["name"] for r in rows] == ["admin", "ci-bot"]
    assert token not in listed.stdout and all(r["scope"] == "admin" for r in rows)
    bot = rows[1]["id"]
    assert mlbench("token", "revoke", str(bot), "999", home=home).returncode == 2  # nothing done
    assert httpx.get(f"{master.url}/api/runs", headers=auth).status_code == 200
    revoked = mlbench("token", "revoke", str(bot), home=home)
    assert revoked.returncode == 0 and f"[{bot}]" in revoked.stdout
    assert httpx.get(f"{master.url}/api/runs", headers=auth).status_code == 401
    assert httpx.get(f"{master.url}/api/runs", headers=master.headers).status_code == 200
    assert "ci-bot" not in mlbench("token", "list", home=home).stdout
    # ids are never reused: the next token does not take the revoked one's id, so a revoke
    # typed from the old listing cannot hit it (SQLite handed out max(id) + 1 before 0005)
    assert mlbench("token", "create", "--name", "next", home=home).returncode == 0
    rows = json.loads(mlbench("token", "list", "--json", home=home).stdout)
    assert [r["name"] for r in rows] == ["admin", "next"] and rows[1]["id"] > bot
    assert mlbench("token", "revoke", str(bot), home=home).returncode == 2
