"""Local launcher: N worker processes on this machine — the per-node agent with one node.

``mlbench run`` starts its ranks through :class:`~mlbench.launch.node.NodeAgent` with
``nnodes=1`` and env:// rendezvous on a free localhost port, so the local engine and every
cluster engine share one failure contract (see :mod:`mlbench.launch.node`): a failing rank stops
the others within seconds with its reason, no worker outlives the launcher, and each rank's
stdout/stderr go to ``rank-<r>.stdout`` / ``rank-<r>.stderr`` in the run directory.

With ``--network`` (:mod:`mlbench.launch.network`) each rank starts inside its own network
namespace, the master address is rank 0's address there, and the namespaces are removed whenever
the run ends — finished, failed, stopped, or the launcher raising on its way out.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import TYPE_CHECKING

from mlbench.launch.node import GRACE_SECONDS, NodeAgent

if TYPE_CHECKING:
    from mlbench.launch.base import Outcome
    from mlbench.launch.network import Network

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
        network: Network | None = None,
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
        self.network = network

    @property
    def workers(self) -> int:
        return self.nproc_per_node

    def start(self) -> None:
        self.master_port = free_port()
        if self.network is None:
            super().start()
            return
        self.network.setup()
        self.master_addr = self.network.master_addr
        self.extra_env.update(self.network.env())
        self.extra_env["MLBENCH_NETWORK_PROBE"] = str(self.network.spec.bandwidth_bps)
        try:
            super().start()
        except BaseException:
            self.terminate()
            self.network.teardown()
            raise

    def rank_prefix(self, rank: int) -> list[str]:
        return self.network.prefix(rank) if self.network is not None else []

    def _outcome(self, state: str, reason: str | None) -> Outcome:
        # every rank has exited (poll/stop terminated the rest): the namespaces can go
        if self.network is not None:
            self.network.teardown()
        return super()._outcome(state, reason)

    def _restart_port(self) -> int:
        return free_port()  # the old one may linger in TIME_WAIT, held by the dead store
