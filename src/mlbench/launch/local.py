"""Local launcher: N worker processes on this machine — the per-node agent with one node.

``mlbench run`` starts its ranks through :class:`~mlbench.launch.node.NodeAgent` with
``nnodes=1`` and env:// rendezvous on a free localhost port, so the local engine and every
cluster engine share one failure contract (see :mod:`mlbench.launch.node`): a failing rank stops
the others within seconds with its reason, no worker outlives the launcher, and each rank's
stdout/stderr go to ``rank-<r>.stdout`` / ``rank-<r>.stderr`` in the run directory.
"""

from __future__ import annotations

import socket
from pathlib import Path

from mlbench.launch.node import GRACE_SECONDS, NodeAgent

__all__ = ["GRACE_SECONDS", "LocalLauncher", "free_port"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalLauncher(NodeAgent):
    """``workers`` ranks on this machine: node 0 of 1, master on 127.0.0.1 (a free port taken at
    start, so a launcher built early does not hold it)."""

    def __init__(
        self,
        run_dir: Path,
        workers: int,
        backend: str = "auto",
        threads_per_worker: int = 1,
        extra_env: dict[str, str] | None = None,
        max_restarts: int = 0,
    ) -> None:
        super().__init__(
            run_dir,
            nnodes=1,
            node_rank=0,
            nproc_per_node=workers,
            master_addr="127.0.0.1",
            master_port=0,
            backend=backend,
            threads_per_worker=threads_per_worker,
            extra_env=dict(extra_env or {}),
            max_restarts=max_restarts,
        )

    @property
    def workers(self) -> int:
        return self.nproc_per_node

    def start(self) -> None:
        self.master_port = free_port()
        super().start()

    def _restart_port(self) -> int:
        return free_port()  # the old one may linger in TIME_WAIT, held by the dead store
