"""``mlbench serve`` as a process: it stops on SIGTERM even while live streams are open."""

from __future__ import annotations

import signal
import threading
import time

import httpx

from .master import Master


def test_sigterm_ends_open_streams_and_exits(master: Master) -> None:
    """A queued run's stream never ends by itself; before the fix the master stopped accepting
    connections on SIGTERM but stayed alive (45 s in the probe) waiting for such streams."""
    with httpx.Client(base_url=master.url, headers=master.headers, timeout=10) as c:
        run = c.post("/api/runs", json={"task": "epsilon-logreg"}).json()["runs"][0]
    opened = threading.Event()
    ended: list[str] = []

    def listen() -> None:
        try:
            with httpx.stream(
                "GET", f"{master.url}/api/runs/{run['id']}/stream", headers=master.headers,
                timeout=httpx.Timeout(5, read=None),
            ) as resp:  # fmt: skip
                for line in resp.iter_lines():
                    opened.set()
                    if line.startswith("event: end"):
                        ended.append(line)
        except httpx.HTTPError:
            pass
        finally:
            opened.set()

    streams = [threading.Thread(target=listen, daemon=True) for _ in range(3)]
    for t in streams:
        t.start()
    assert opened.wait(10)
    time.sleep(0.5)  # every stream is in its poll loop
    assert master.proc is not None
    start = time.monotonic()
    master.proc.send_signal(signal.SIGTERM)
    master.proc.wait(timeout=15)
    took = time.monotonic() - start
    assert took < 3.0, f"the master took {took:.1f} s to exit"
    for t in streams:
        t.join(timeout=5)
        assert not t.is_alive()
    assert not ended  # closed, not ended: a client reconnects with its last id
