"""Load and abuse: a burst of oversized and malformed requests while a real run uploads.

The master (a real ``mlbench serve``) must keep answering health checks within a second, store
every event of the run, and end with the memory it started with. The burst is what a probe used
to take a master down: bodies declared at 1 GB, chunked bodies that never end, 100,000-event
batches, unauthenticated writes, malformed JSON, hostile headers. Runs in well under a minute.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil

from mlbench.telemetry.events import read_events

from ..e2e.helpers import cli_env
from .master import Master

HEALTH_BUDGET = 1.0  # seconds a health check may take, at worst, during the burst


def _declared(master: Master, path: str, length: int, sent: int, token: str = "") -> None:
    """Promise ``length`` bytes, send ``sent`` of them, read whatever answer comes."""
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n"
    head += f"Authorization: Bearer {token}\r\n" if token else ""
    with socket.create_connection(("127.0.0.1", master.port), timeout=5) as sock:
        sock.sendall(head.encode() + b"\r\n")
        try:
            sock.sendall(b"[" * sent)
            sock.recv(1024)
        except OSError:
            pass  # the master may close on us mid-send: that is the point


def _endless() -> Iterator[bytes]:
    for _ in range(4096):  # 64 MB, chunked, if nobody stops reading
        yield b"{" * 16384


def _burst(master: Master, run_id: str, stop: threading.Event) -> int:
    """Hostile requests until ``stop``; returns how many were sent."""
    admin = master.headers
    event = json.dumps(
        {
            "run_id": run_id,
            "rank": 0,
            "seq": 0,
            "time": 0,
            "step": 0,
            "epoch": 0,
            "kind": "train",
            "name": "loss",
            "value": 1,
        }
    )
    many = ('{"events":[' + ",".join([event] * 100_000) + "]}").encode()  # 10 MB, 100k events
    sent = 0
    with httpx.Client(base_url=master.url, timeout=10) as c:
        while not stop.is_set():
            _declared(master, f"/api/runs/{run_id}/events", 2**30, 2**20)  # "1 GB", no token
            _declared(master, "/api/runs", 100 * 2**20, 2**20, master.token)  # "100 MB", admin
            _declared(master, f"/api/runs/{run_id}/events", 4 * 2**20, 0)  # no token, no body
            for url, headers in ((f"/api/runs/{run_id}/events", {}), ("/api/runs", admin)):
                with contextlib.suppress(httpx.HTTPError):  # cut off: fine
                    c.post(url, content=_endless(), headers=headers)
            c.post(f"/api/runs/{run_id}/events", content=many, headers=admin)  # 413
            c.post(f"/api/runs/{run_id}/events", content=b'{"events": [', headers=admin)
            c.post("/api/runs", json={"task": "x" * 50_000}, headers=admin)
            c.post("/api/runs", json={"overrides": ["\x00"] * 5000}, headers=admin)
            c.get(f"/api/runs/{run_id}/stream", params={"cursor": "9" * 8000}, headers=admin)
            sent += 10
    return sent


def test_a_burst_of_hostile_requests_during_a_real_upload(
    master: Master, real_data: Path, tmp_path: Path
) -> None:
    assert master.proc is not None
    proc_info = psutil.Process(master.proc.pid)
    created = httpx.post(
        f"{master.url}/api/runs", json={"task": "epsilon-logreg", "workers": 2},
        headers=master.headers,
    )  # fmt: skip
    run_id = created.json()["runs"][0]["id"]
    for _ in range(20):  # warm the master's code paths before taking its baseline
        httpx.get(f"{master.url}/api/health")
    baseline = proc_info.memory_info().rss

    stop = threading.Event()
    latencies: list[float] = []
    peak = [baseline]

    def watch() -> None:
        while not stop.is_set():
            start = time.monotonic()
            try:
                ok = httpx.get(f"{master.url}/api/health", timeout=5).status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.monotonic() - start if ok else float("inf"))
            peak[0] = max(peak[0], proc_info.memory_info().rss)
            time.sleep(0.05)

    runs = tmp_path / "runs"
    run = subprocess.Popen(
        [sys.executable, "-m", "mlbench.cli.main", "run", "epsilon-logreg",
        "--workers", "2", "--data-dir", str(real_data),
        "--set", "data.dataset=a9a", "--set", "train.max_steps=400",
        "--set", "train.log_every_steps=1", "--set", "train.log_every_seconds=0",
        "--run-id", run_id, "--upload", master.url, "--runs-dir", str(runs)],
        env=cli_env(tmp_path, MLBENCH_UPLOAD_TOKEN=master.token),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    burst_count: list[int] = []
    attacker = threading.Thread(target=lambda: burst_count.append(_burst(master, run_id, stop)))
    attacker.start()
    try:
        _, err = run.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        run.kill()
        raise
    finally:
        time.sleep(1.0)  # the burst goes on a little after the run
        stop.set()
        attacker.join(timeout=60)
        watcher.join(timeout=10)
    assert run.returncode == 0, err
    assert burst_count and burst_count[0] >= 10

    expected = sorted(
        (r["rank"], r["seq"], r["step"], r["kind"], r["name"], r["value"])
        for rank in range(2)
        for r in read_events(runs / run_id / f"rank-{rank}.jsonl")
    )
    assert len(expected) > 5000 and master.stored(run_id) == expected  # all arrived, once

    assert latencies and max(latencies) < HEALTH_BUDGET, sorted(latencies)[-5:]
    settled = proc_info.memory_info().rss
    mib = 2**20
    assert peak[0] - baseline < 150 * mib, f"peak {peak[0] / mib:.0f} MiB, {baseline / mib:.0f}"
    assert settled - baseline < 60 * mib, f"after {settled / mib:.0f} MiB, {baseline / mib:.0f}"
