"""FastAPI dependencies: the app's settings, a database session, who is calling.

Why ``request.app.state`` and not closures: the routes used to be nested functions inside
``create_app``, reaching the engine, the session factory and the auth settings as closure
variables — which is what made app.py one 500-line function no module could share. Everything a
route needs now hangs off ``app.state.master`` (one ``MasterState``, set by ``create_app``) and
reaches the route through these dependencies, so routers are plain module-level code and two apps
in one process (tests) never share state.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from mlbench.server import auth
from mlbench.server.executor import Executor
from mlbench.server.models import Run, Token
from mlbench.server.schemas import RUN_ID


@dataclass
class SchedulerSettings:
    """Run execution by this master (off: the API only records runs, e.g. in API tests)."""

    master_url: str
    runs_dir: Path
    capacity_workers: int
    data_dir: str | None = None  # given to runs whose overrides don't set data.dir
    poll_seconds: float = 0.5
    #: who runs admitted runs; None: a LocalExecutor on this machine (`mlbench serve --executor`)
    executor: Executor | None = None


@dataclass
class MasterState:
    """What the routes of one app share (``app.state.master``)."""

    engine: Engine
    sessions: sessionmaker[Session]
    scheduler: SchedulerSettings | None
    open_reads: bool
    stream_interval: float  # how often a live stream looks for new events and log lines
    # set when the server begins to shut down (SIGTERM): live streams end at their next poll,
    # so the server's graceful shutdown, which waits for open responses, is not held open by
    # streams that would never end by themselves (a queued run's stream)
    stopping: threading.Event = field(default_factory=threading.Event)


def master_state(request: Request) -> MasterState:
    state: MasterState = request.app.state.master
    return state


State = Annotated[MasterState, Depends(master_state)]


def session(state: State) -> Iterator[Session]:
    with state.sessions() as s:
        yield s


# "function" scope: the session closes when the endpoint returns, not when its response has been
# sent, so a long-lived stream never holds a pooled connection
SessionDep = Annotated[Session, Depends(session, scope="function")]
_bearer = HTTPBearer(auto_error=False)


def caller(
    s: SessionDep, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Token | None:
    """The token the request carries (None without one); an unknown token is a 401."""
    if creds is None:
        return None
    token = auth.lookup(s, creds.credentials)
    if token is None:
        raise HTTPException(401, detail="invalid token", headers={"WWW-Authenticate": "Bearer"})
    return token


Caller = Annotated[Token | None, Depends(caller)]


def admin(token: Caller) -> Token:
    """Every write: an admin token (401 without a valid token, 403 with an upload token)."""
    if token is None:
        raise HTTPException(
            401, detail="a bearer token is required", headers={"WWW-Authenticate": "Bearer"}
        )
    if token.scope != "admin":
        raise HTTPException(403, detail=f"a {token.scope} token cannot do this")
    return token


def reader(token: Caller, state: State) -> None:
    """Reads: as writes, unless the master was started with open reads."""
    if not state.open_reads:
        admin(token)


Admin = Depends(admin)
Reader = Depends(reader)

RunId = Annotated[str, PathParam(max_length=64, pattern=RUN_ID, description="a run's id")]


def get_run(s: Session, run_id: str) -> Run:
    """The run, or a 404 naming it."""
    run = s.get(Run, run_id)
    if run is None:
        raise HTTPException(404, detail=f"run {run_id!r} not found")
    return run
