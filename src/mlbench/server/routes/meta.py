"""What a client needs to know about this master before it looks at runs: is it up, which tasks
and schemes it offers, what a run form may ask for, and the words runs are described with."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import select

from mlbench import __version__
from mlbench.server.deps import Reader, State
from mlbench.server.schemas import HealthOut, SettingsOut, VocabOut, errors, vocabulary
from mlbench.vocab import Backend

router = APIRouter(prefix="/api", tags=["meta"])


@router.get("/health")
def health(state: State) -> HealthOut:
    """Open to anyone (a load balancer's probe): the database answered, and which one it is."""
    with state.engine.connect() as conn:
        conn.execute(select(1))
    return HealthOut(status="ok", version=__version__, database=state.engine.dialect.name)


@router.get("/tasks", dependencies=[Reader], responses=errors(401, 403))
def tasks() -> list[dict[str, Any]]:
    """Every task's spec: hyperparameters, targets, config defaults (``Task.spec()``)."""
    from mlbench.registry import task_names
    from mlbench.runs import task_spec

    return [task_spec(name) for name in task_names()]


@router.get("/algorithms", dependencies=[Reader], responses=errors(401, 403))
def algorithms() -> list[dict[str, Any]]:
    """Every communication scheme, with the ``algorithm.*`` options it reads."""
    from mlbench.runs import algorithm_specs

    return algorithm_specs()


@router.get("/settings", dependencies=[Reader], responses=errors(401, 403))
def settings(state: State) -> SettingsOut:
    """What this master offers a run form: worker capacity, backends, scheduling on/off."""
    sched = state.scheduler
    return SettingsOut(
        version=__version__,
        scheduler=sched is not None,
        capacity_workers=sched.capacity_workers if sched else None,
        backends=list(Backend),
        open_reads=state.open_reads,
    )


@router.get("/vocab", response_model=VocabOut)
def vocab() -> dict[str, Any]:
    """Run states and their transitions, phase names, event kinds, stop reasons, goals and
    backends — from the Python enums, so a client never re-declares them. Open to anyone: these
    are the program's words, not anyone's data (the dashboard's ``/static/js/vocab.js`` is the
    same content as an ES module)."""
    return vocabulary()
