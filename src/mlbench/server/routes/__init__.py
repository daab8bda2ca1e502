"""The API's routers, one module per resource group; ``create_app`` includes them all.

``runs``: create (sweeps, repeats), list, get, cancel, delete, import, logs, download.
``events``: batched idempotent ingest, and the reads over events (metrics, phases, series).
``stream``: a run's live Server-Sent Events stream.
``meta``: health, tasks, algorithms, this master's settings, the shared vocabularies.
"""

from mlbench.server.routes import events, meta, runs, stream

ROUTERS = (meta.router, runs.router, events.router, stream.router)

__all__ = ["ROUTERS"]
