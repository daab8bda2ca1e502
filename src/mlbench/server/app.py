"""The master's FastAPI application: ``create_app`` wires the pieces together.

Every invalid request is a 4xx naming the field; the OpenAPI schema FastAPI serves at
``/openapi.json`` is the contract. The pieces (docs/server.md has the map):

* ``routes/`` — one router per resource group (runs, events, stream, meta);
* ``schemas`` — request/response models; ``deps`` — session, auth, the app's state;
* ``services`` — what the master does with runs; ``states`` — the run state machine;
* ``scheduler`` + ``executor`` — running queued runs; ``dashboard`` — the web pages.

This module only builds the app: it migrates the database, puts a ``MasterState`` on
``app.state`` for the dependencies, installs the error handlers, includes the routers, starts
the scheduler with the app's lifespan, and mounts the dashboard last.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import Engine

from mlbench import __version__
from mlbench.server import auth, db
from mlbench.server.deps import MasterState, SchedulerSettings
from mlbench.server.guard import BodyLimits, Guard, SecurityHeaders
from mlbench.server.routes import ROUTERS
from mlbench.server.schemas import bounded_errors
from mlbench.server.services import FieldError, RunBusy
from mlbench.server.states import InvalidTransition

__all__ = ["BodyLimits", "SchedulerSettings", "create_app"]


def create_app(
    engine: Engine | None = None,
    scheduler: SchedulerSettings | None = None,
    *,
    open_reads: bool = False,
    stream_interval: float = 0.5,
    limits: BodyLimits | None = None,
) -> FastAPI:
    """The master. Writes need a bearer token; reads too unless ``open_reads``.
    ``scheduler``: run queued runs on this machine (None: only record them).
    ``stream_interval``: how often a live stream looks for new events and log lines.
    ``limits``: request body size limits per endpoint (docs/server.md)."""
    engine = engine or db.make_engine(db.database_url())
    db.upgrade(engine)
    state = MasterState(
        engine=engine,
        sessions=db.session_factory(engine),
        scheduler=scheduler,
        open_reads=open_reads,
        stream_interval=stream_interval,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        running = None
        if scheduler is not None:
            from mlbench.server.executor import LocalExecutor
            from mlbench.server.scheduler import Scheduler

            running = Scheduler(
                state.sessions,
                scheduler.executor
                or LocalExecutor(
                    scheduler.runs_dir, scheduler.master_url, scheduler.capacity_workers
                ),
                capacity_workers=scheduler.capacity_workers,
                data_dir=scheduler.data_dir,
                poll_seconds=scheduler.poll_seconds,
            )
            running.start()
        yield
        if running is not None:
            running.stop()

    # no /docs or /redoc: FastAPI's pages load their scripts from a CDN, which an offline
    # master cannot reach and a page that invites pasting a token must not run (the schema is
    # /openapi.json; docs/server.md names offline viewers)
    app = FastAPI(
        title="mlbench master",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.engine = engine
    app.state.master = state

    def token_valid(token: str) -> bool:
        with state.sessions() as s:
            return auth.lookup(s, token) is not None

    app.add_middleware(Guard, limits=limits or BodyLimits(), token_valid=token_valid)
    app.add_middleware(SecurityHeaders)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes every offending input whole; this one is bounded
        errors = [dict(e) for e in exc.errors()]
        return JSONResponse({"detail": bounded_errors(errors)}, status_code=422)

    @app.exception_handler(InvalidTransition)
    async def _conflict(request: Request, exc: InvalidTransition) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(RunBusy)
    async def _busy(request: Request, exc: RunBusy) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(FieldError)
    async def _field(request: Request, exc: FieldError) -> JSONResponse:
        detail = [{"type": "value_error", "loc": exc.loc, "msg": exc.message}]
        return JSONResponse({"detail": detail}, status_code=422)

    for router in ROUTERS:
        app.include_router(router)

    from mlbench.server.dashboard import mount_dashboard

    mount_dashboard(app)  # after the API routes: the dashboard never shadows /api
    return app
