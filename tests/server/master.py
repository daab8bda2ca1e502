"""A real ``mlbench serve`` process for tests (fixed port and SQLite file, so it can restart)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

from mlbench.launch.local import free_port

from ..e2e.helpers import cli_env


class Master:
    """``mlbench serve`` in a subprocess, on a fixed port and SQLite file (so it can restart)."""

    def __init__(self, home: Path, *args: str) -> None:
        self.home, self.port, self.args = home, free_port(), list(args)
        self.token = ""
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlbench.cli.main",
                "serve",
                "--port",
                str(self.port),
                *self.args,
            ],
            env=cli_env(self.home),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1).status_code == 200:
                    if not self.token:  # the first admin token, made the way a user makes it
                        self.token = subprocess.run(
                            [sys.executable, "-m", "mlbench.cli.main", "token", "create"],
                            env=cli_env(self.home),
                            capture_output=True,
                            text=True,
                            check=True,
                        ).stdout.strip()
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("master did not start")

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stored(self, run_id: str) -> list[tuple]:
        engine = create_engine(f"sqlite:///{self.home / 'mlbench.db'}")
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT rank, seq, step, kind, name, value FROM events WHERE run_id = :r "
                    "ORDER BY rank, seq"
                ),
                {"r": run_id},
            )
            out = [tuple(r) for r in rows]
        engine.dispose()
        return out
