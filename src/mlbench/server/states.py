"""A run's life on the master: its states and the only moves between them.

Why a module of its own: two writers change a run's state — the API (a user cancels) and the
scheduler (admits, fails an oversized run, records how a launcher ended) — and they used to do it
differently: the API through ``transition()``, the scheduler by assigning ``run.state``. A table
that only one of them consults is a table nobody can trust. Both now call ``transition()``, so
every move is checked against one table and stamps ``started_at``/``finished_at`` the same way.

::

    queued ──► running ──► finished | failed | cancelled
       └──────────────────► failed | cancelled

This is the master's vocabulary (a database column), not the training layers': it lives in
``server/``, while the words runs write themselves (phases, event kinds) are in ``mlbench.vocab``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

from mlbench.errors import MlbenchError


class RunState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"


RUN_STATES: tuple[RunState, ...] = tuple(RunState)
TERMINAL_STATES: frozenset[RunState] = frozenset(
    {RunState.FINISHED, RunState.FAILED, RunState.CANCELLED}
)
TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    RunState.QUEUED: frozenset({RunState.RUNNING, RunState.CANCELLED, RunState.FAILED}),
    RunState.RUNNING: frozenset({RunState.FINISHED, RunState.FAILED, RunState.CANCELLED}),
}
# terminal states go nowhere; every other state can reach one
assert all(not (s in TERMINAL_STATES and s in TRANSITIONS) for s in RunState)
assert set(TRANSITIONS) | TERMINAL_STATES == set(RunState)


class InvalidTransition(MlbenchError):
    """A move the table forbids; the API answers it with 409 Conflict."""


class HasState(Protocol):
    """What ``transition`` touches (``mlbench.server.models.Run`` has it); a protocol so this
    module needs no database import and a test can pass any object."""

    id: str
    state: str
    reason: str | None
    started_at: datetime | None
    finished_at: datetime | None


def transition(run: HasState, new_state: RunState | str, reason: str | None = None) -> None:
    """Move ``run`` to ``new_state`` if the table allows it, else raise ``InvalidTransition``.

    Entering ``running`` stamps ``started_at``; entering a terminal state stamps ``finished_at``
    and records ``reason`` (None clears an earlier one)."""
    try:
        current, target = RunState(run.state), RunState(new_state)
    except ValueError:
        raise InvalidTransition(
            f"run {run.id} is {run.state}; it cannot become {new_state}"
        ) from None
    if target not in TRANSITIONS.get(current, frozenset()):
        raise InvalidTransition(f"run {run.id} is {current}; it cannot become {target}")
    now = datetime.now(UTC)
    run.state = target.value
    if target is RunState.RUNNING:
        run.started_at = now
    if target in TERMINAL_STATES:
        run.finished_at = now
        run.reason = reason
