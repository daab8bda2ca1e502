"""Local launcher: N worker processes on this machine, env:// rendezvous on a free localhost port.

Guarantees (the failure contract of the skeleton issue):

* if any rank exits non-zero or is killed, all other ranks are terminated within seconds
  (SIGTERM, then SIGKILL after a grace period) and the run is failed with that rank's reason;
* workers run in their own session (a terminal Ctrl-C reaches only the launcher, which then stops
  them in order) and get SIGKILL from the kernel if the launcher itself dies (PR_SET_PDEATHSIG),
  so no worker is ever left behind;
* each rank's stdout/stderr go to ``rank-<r>.stdout`` / ``rank-<r>.stderr`` in the run directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from mlbench.launch.base import Outcome, wait
from mlbench.launch.worker import ERROR_MARKER

GRACE_SECONDS = 3.0
# fragments of the errors a rank sees when a *peer* vanished mid-collective
_PEER_LOSS = (
    "DistBackendError",
    "Connection closed",
    "Connection reset",
    "Broken pipe",
    "connection",
    "gloo",
    "Gloo",
    "NCCL",
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@dataclass
class LocalLauncher:
    run_dir: Path
    workers: int
    backend: str = "auto"
    threads_per_worker: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list, init=False)
    _files: list[IO[bytes]] = field(default_factory=list, init=False)
    _started: float = field(default=0.0, init=False)

    def start(self) -> None:
        port = free_port()
        self._started = time.perf_counter()
        for rank in range(self.workers):
            env = dict(os.environ)
            env.update(
                RANK=str(rank),
                LOCAL_RANK=str(rank),
                WORLD_SIZE=str(self.workers),
                LOCAL_WORLD_SIZE=str(self.workers),
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=str(port),
                OMP_NUM_THREADS=str(self.threads_per_worker),
                MLBENCH_THREADS=str(self.threads_per_worker),
                PYTHONUNBUFFERED="1",
            )
            env.update(self.extra_env)
            out = open(self.run_dir / f"rank-{rank}.stdout", "ab")  # noqa: SIM115
            err = open(self.run_dir / f"rank-{rank}.stderr", "ab")  # noqa: SIM115
            self._files += [out, err]
            cmd = [
                sys.executable,
                "-m",
                "mlbench.launch.worker",
                "--run-dir",
                str(self.run_dir),
                "--backend",
                self.backend,
            ]
            self.procs.append(
                subprocess.Popen(
                    cmd,
                    env=env,
                    stdout=out,
                    stderr=err,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                )
            )

    def _reason(self, rank: int, code: int) -> str:
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            what = f"rank {rank} was killed by {name}"
        else:
            what = f"rank {rank} exited with code {code}"
        tail = _stderr_tail(self.run_dir / f"rank-{rank}.stderr")
        marker = [ln for ln in tail if ln.startswith(ERROR_MARKER)]
        if marker:
            return marker[-1][len(ERROR_MARKER) :].strip()
        lines = [ln for ln in tail if ln.strip()]
        return f"{what}: {lines[-1].strip()}" if lines else what

    def _root_cause(self) -> str:
        """The failing rank's reason, preferring a real error over peers' lost-connection errors.

        When one rank dies, its peers fail inside a collective moments later; the rank whose exit
        we happen to notice first need not be the cause. Wait briefly for the others, then prefer a
        rank whose error is not a communication error.
        """
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and any(p.poll() is None for p in self.procs):
            time.sleep(0.05)
        reasons = [
            self._reason(rank, code)
            for rank, code in enumerate(p.poll() for p in self.procs)
            if code not in (None, 0)
        ]
        primary = [r for r in reasons if not any(s in r for s in _PEER_LOSS)]
        return (primary or reasons)[0]

    def terminate(self, grace: float = GRACE_SECONDS) -> None:
        """SIGTERM every live worker, SIGKILL what is left after ``grace`` seconds."""
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in self.procs:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                p.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    def poll(self) -> Outcome | None:
        """None while ranks run; the outcome once all exited 0, or the first failure (then every
        other rank is stopped, and the reason is the root cause's)."""
        codes = [p.poll() for p in self.procs]
        if any(c not in (None, 0) for c in codes):
            reason = self._root_cause()
            self.terminate()
            return self._outcome("failed", reason)
        if all(c == 0 for c in codes):
            return self._outcome("finished", None)
        return None

    def stop(self, reason: str = "interrupted by user (Ctrl-C)") -> Outcome:
        self.terminate()
        return self._outcome("cancelled", reason)

    def logs(self, rank: int) -> tuple[Path, Path]:
        return self.run_dir / f"rank-{rank}.stdout", self.run_dir / f"rank-{rank}.stderr"

    def wait(self, on_tick: Callable[[], None] | None = None) -> Outcome:
        """Watch the workers until all exit; stop everyone on the first failure or Ctrl-C."""
        return wait(self, on_tick)

    def _outcome(self, state: str, reason: str | None) -> Outcome:
        for fh in self._files:
            fh.close()
        return Outcome(
            state, reason, [p.poll() for p in self.procs], time.perf_counter() - self._started
        )


def _stderr_tail(path: Path, max_bytes: int = 8192) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            return fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return []
