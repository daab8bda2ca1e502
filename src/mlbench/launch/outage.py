"""``--fault master-down:after=T,for=D``: the master unreachable from the run for a while.

The run's uploader (:class:`~mlbench.telemetry.uploader.Uploader`, in the launcher) talks to the
master through this transport, which refuses every request with a connection error from ``after``
to ``after + for`` seconds after the run started — what the uploader sees when the master is
down or the network to it is cut. The training never waits on the master, so what the fault
measures is the upload's promise: once the master is back, every event arrives, none twice
(the uploader keeps its offsets and the master ingests idempotently by (run, rank, seq)).
Only this run's connection is cut: the master itself keeps serving its other clients.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx


class OutageTransport(httpx.BaseTransport):
    """An httpx transport that is down from ``start + after`` for ``duration`` seconds."""

    def __init__(
        self,
        after: float,
        duration: float,
        *,
        inner: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner if inner is not None else httpx.HTTPTransport()
        self.clock = clock
        self.down_from = clock() + after
        self.down_until = self.down_from + duration
        self.refused = 0  # requests refused while down

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.down_from <= self.clock() < self.down_until:
            self.refused += 1
            raise httpx.ConnectError("master down (injected fault master-down)", request=request)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()
