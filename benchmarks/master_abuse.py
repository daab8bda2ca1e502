"""What one hostile request costs the master (issue 12, items 1 and 2): its resident memory
and its health checks' latency while it receives the request, and how long and how big the
answer is. Starts a real ``mlbench serve`` on SQLite in a temporary home.

    python benchmarks/master_abuse.py             # prints a table; --no-record: don't append
    python benchmarks/master_abuse.py --mb 200    # the size of the bodies actually sent

The probe that found the problems sent 1 GB; the default here is 200 MB so the "before" side
stays within this machine's memory and a minute.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil
from common import finish, table  # type: ignore[import-not-found]

ROOT = Path(__file__).resolve().parents[1]


def start_master(home: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    env = {**os.environ, "MLBENCH_HOME": str(home)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "mlbench.cli.main"]
    proc = subprocess.Popen(
        [*cmd, "serve", "--no-scheduler", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    token = subprocess.run(
        [*cmd, "token", "create"], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    return proc, url, token


def attack(url: str, pid: int, send: callable) -> dict[str, float]:  # type: ignore[valid-type]
    """Run ``send()`` while watching the master's RSS and health latency."""
    info = psutil.Process(pid)
    before = info.memory_info().rss
    stop = threading.Event()
    worst, peak = [0.0], [before]

    def watch() -> None:
        while not stop.is_set():
            start = time.monotonic()
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(f"{url}/api/health", timeout=30)
            worst[0] = max(worst[0], time.monotonic() - start)
            peak[0] = max(peak[0], info.memory_info().rss)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    start = time.monotonic()
    status, size = send()
    took = time.monotonic() - start
    time.sleep(0.5)
    stop.set()
    watcher.join()
    mib = 2**20
    return {
        "status": status,
        "answer_s": took,
        "answer_bytes": size,
        "peak_mib": (peak[0] - before) / mib,
        "kept_mib": (info.memory_info().rss - before) / mib,
        "health_worst_s": worst[0],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mb", type=int, default=200, help="MB actually sent in the big bodies")
    p.add_argument("--events", type=int, default=200_000, help="events in the big batch")
    p.add_argument("--no-record", action="store_true", help="don't append to RESULTS.md")
    p.add_argument("--quick", action="store_true", help="20 MB and 20,000 events (smoke test)")
    args = p.parse_args()
    if args.quick:
        args.mb, args.events = 20, 20_000
    size = args.mb * 2**20
    with tempfile.TemporaryDirectory() as home:
        proc, url, token = start_master(Path(home))
        admin = {"Authorization": f"Bearer {token}"}
        run_id = httpx.post(f"{url}/api/runs", json={"task": "epsilon-logreg"}, headers=admin)
        run_id = run_id.json()["runs"][0]["id"]
        event = {"run_id": run_id, "rank": 0, "seq": 0, "time": 0, "step": 0, "epoch": 0,
                 "kind": "train", "name": "loss", "value": 1}  # fmt: skip
        batch = json.dumps({"events": [event] * args.events}).encode()

        def post(path: str, body: bytes, headers: dict[str, str]) -> tuple[int, int]:
            try:
                r = httpx.post(f"{url}{path}", content=body, headers=headers, timeout=600)
                return r.status_code, len(r.content)
            except httpx.HTTPError:
                return 0, 0  # the master cut the connection

        cases = {
            f"{args.mb} MB, no token, to /events": lambda: post(
                f"/api/runs/{run_id}/events", b"[" * size, {}
            ),
            f"{args.mb} MB, admin, to /api/runs": lambda: post("/api/runs", b"[" * size, admin),
            f"{args.events:,} events, admin, to /events": lambda: post(
                f"/api/runs/{run_id}/events", batch, admin
            ),
        }
        rows = []
        met = True
        try:
            for name, send in cases.items():
                r = attack(url, proc.pid, send)
                met &= r["status"] == 413 and r["peak_mib"] < 20 and r["health_worst_s"] < 1
                rows.append(
                    [
                        name,
                        str(r["status"]),
                        f"{r['answer_s']:.2f}",
                        f"{r['answer_bytes']:,}",
                        f"{r['peak_mib']:.0f}",
                        f"{r['kept_mib']:.0f}",
                        f"{r['health_worst_s']:.2f}",
                    ]
                )
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    body = table(
        [
            "request",
            "status",
            "answered after (s)",
            "answer bytes",
            "RSS peak +MiB",
            "RSS kept +MiB",
            "worst health check (s)",
        ],
        rows,
    )
    body += (
        f"\n\nThe target (every request refused with 413 before it is read: RSS peak < 20 MiB over "
        f"the baseline, every health check < 1 s): {'met' if met else 'MISSED'}.\n"
    )
    return finish("Master under hostile requests (issue 12)", body, args.no_record)


if __name__ == "__main__":
    sys.exit(main())
