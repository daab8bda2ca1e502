"""Events: batched idempotent ingest (the uploaders' endpoint), and the reads the dashboard and
reports make over a run's events — which metrics it has, phase totals, one metric's series."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy import func, select

from mlbench import limits
from mlbench.server.deps import Caller, Reader, RunId, SessionDep, State, get_run
from mlbench.server.eventstore import RunGone, insert_events, series_points
from mlbench.server.models import Event, Run
from mlbench.server.schemas import (
    EVENT_BATCH,
    MAX_BATCH,
    PRINTABLE,
    IngestOut,
    MetricsOut,
    PhasesOut,
    RunOut,
    SeriesOut,
    UploadIn,
    body_errors,
    errors,
    inline_schema,
    run_json,
)
from mlbench.server.services import FieldError, record_upload
from mlbench.server.states import TERMINAL_STATES
from mlbench.vocab import EVENT_KINDS, EventKind

router = APIRouter(prefix="/api/runs/{run_id}", tags=["events"])


def uploader(run_id: RunId, s: SessionDep, token: Caller) -> Run:
    """Who may add events to a run, checked before the body is read (a route's dependencies
    are solved in order, and this one comes first): an admin token, or this run's upload
    token while the run has not ended. A run's upload token dies with its run (the scheduler
    also deletes it then); an admin re-opens a run's events with ``mlbench import``."""
    if token is None:
        raise HTTPException(401, detail="a bearer token is required")
    if token.scope != "admin" and token.run_id != run_id:
        raise HTTPException(403, detail="this upload token belongs to another run")
    run = get_run(s, run_id)
    if token.scope != "admin" and run.state in TERMINAL_STATES:
        raise HTTPException(
            403, detail=f"run {run_id} is {run.state}: its upload token no longer adds events"
        )
    return run


async def _raw_body(request: Request) -> bytes:
    return await request.body()


def _parse_batch(body: bytes) -> list[Any]:
    """The batch's events, its size checked before any of them is validated.

    An event is one JSON object with no nested object, so ``{`` counts bound the number of
    events from above (a ``{`` inside a string only over-counts): a body with at most
    ``MAX_BATCH + 1`` of them cannot hold too many events, and its check costs one memchr-speed
    pass. Only above that is the body parsed to count exactly — still before validation, which
    a probe showed takes 97 s for 1,000,000 events when the cap is checked last."""
    if body.count(b"{") > MAX_BATCH + 1:
        try:
            n = len(json.loads(body)["events"])
        except (ValueError, TypeError, KeyError):
            n = 0  # not a batch at all: validation says what is wrong
        if n > MAX_BATCH:
            raise HTTPException(
                413, detail=f"{n} events in one batch; at most {MAX_BATCH} per request"
            )
    try:
        events: list[Any] = EVENT_BATCH.validate_json(body)["events"]
    except ValidationError as exc:  # the same 422 FastAPI gives for a declared body
        raise RequestValidationError(body_errors(exc)) from None
    return events


@router.post(
    "/events",
    responses=errors(401, 403, 404, 413),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": inline_schema(EVENT_BATCH)}},
        }
    },
)
def ingest(
    run_id: RunId,
    run: Annotated[Run, Depends(uploader)],
    body: Annotated[bytes, Depends(_raw_body)],
    s: SessionDep,
    state: State,
) -> IngestOut:
    """Idempotent by (run, rank, seq): a retried batch inserts nothing twice. Needs an admin
    token, or the upload token of this run while it has not ended. Body: ``{"events": [...]}``,
    at most 10,000 (413 above, before any is validated) and at most the master's events body
    limit (``mlbench serve --max-events-mb``)."""
    events = _parse_batch(body)
    rows = []
    for i, e in enumerate(events):
        if e["run_id"] != run_id:
            raise FieldError(f"events[{i}].run_id", f"is {e['run_id'][:64]!r}, not {run_id!r}")
        if e["rank"] >= run.workers:
            raise FieldError(f"events[{i}].rank", f"run {run_id} has {run.workers} ranks")
        rows.append(
            (
                run_id,
                e["rank"],
                e["seq"],
                e["time"],
                e["step"],
                e["epoch"],
                e["kind"],
                e["name"],
                e["value"],
                e.get("unit"),
            )
        )
    if not rows:
        return IngestOut(received=0, inserted=0)
    try:
        inserted = insert_events(s, state.engine, rows)  # commits
    except RunGone:
        raise HTTPException(404, detail=f"run {run_id!r} not found") from None
    return IngestOut(received=len(rows), inserted=inserted)


@router.put("/upload", response_model=RunOut, responses=errors(400, 401, 403, 404, 413))
def report_upload(
    run_id: RunId, status: UploadIn, run: Annotated[Run, Depends(uploader)], s: SessionDep
) -> dict[str, Any]:
    """How the run's event upload ended (its launcher, or ``mlbench import``, at the end):
    ``complete`` false says some events are not here — refused and quarantined, or not sent.
    Checked against the events stored. Needs an admin token, or this run's upload token while
    the run has not ended."""
    record_upload(s, run, status)
    s.commit()
    return run_json(run)


@router.get("/metrics", dependencies=[Reader], responses=errors(401, 403, 404))
def metrics(run_id: RunId, s: SessionDep) -> MetricsOut:
    """Which (kind, name) series the run has, with their unit and event count."""
    get_run(s, run_id)
    # (kind, name) counts come from the series index alone; the unit is read from one row per
    # metric (a max(unit) over all rows cost ~2 s on a 1M-event run)
    rows = s.execute(
        select(Event.kind, Event.name, func.count())
        .where(Event.run_id == run_id)
        .group_by(Event.kind, Event.name)
        .order_by(Event.kind, Event.name)
    ).all()
    out = []
    for kind, name, count in rows:
        unit = s.scalar(
            select(Event.unit)
            .where(Event.run_id == run_id, Event.kind == kind, Event.name == name)
            .limit(1)
        )
        out.append({"kind": kind, "name": name, "unit": unit, "count": count})
    return MetricsOut.model_validate({"metrics": out})


@router.get("/phases", dependencies=[Reader], responses=errors(401, 403, 404))
def phases(
    run_id: RunId,
    s: SessionDep,
    until_step: int | None = Query(
        None, ge=0, le=2**62, description="only phase events at steps ≤ this (the target's)"
    ),
) -> PhasesOut:
    """Seconds per phase per rank, summed over every ``phase`` event so far (exact while the run
    is live, unlike a sum over a down-sampled series)."""
    get_run(s, run_id)
    conds = [Event.run_id == run_id, Event.kind == EventKind.PHASE.value]
    if until_step is not None:
        conds.append(Event.step <= until_step)
    rows = s.execute(
        select(Event.rank, Event.name, func.sum(Event.value), func.max(Event.step))
        .where(*conds)
        .group_by(Event.rank, Event.name)
    )
    ranks: dict[str, dict[str, float]] = {}
    steps: dict[str, int] = {}
    for rank, name, total, step in rows:
        ranks.setdefault(str(rank), {})[name] = float(total or 0.0)
        steps[str(rank)] = max(steps.get(str(rank), 0), int(step or 0))
    return PhasesOut(run_id=run_id, ranks=ranks, last_step=steps)


@router.get(
    "/series", dependencies=[Reader], response_model=SeriesOut, responses=errors(401, 403, 404)
)
def series(
    run_id: RunId,
    s: SessionDep,
    kind: str = Query(max_length=16),
    name: str = Query(max_length=limits.NAME_MAX, pattern=PRINTABLE),
    rank: int | None = Query(None, ge=0, le=1_000_000),
    since: float | None = Query(None, description="only events with time > since"),
    max_points: int = Query(1000, ge=1, le=100_000),
) -> dict[str, Any]:
    """One metric's time series per rank, down-sampled on the server to ≤ max_points per rank
    (evenly spaced in steps), plus each rank's last point. Index seeks only: the cost grows with
    max_points, not with the run's length (see mlbench.server.eventstore)."""
    run = get_run(s, run_id)
    # checked here, not typed as EventKind: an unknown kind is a 422 only for an existing run
    # (a 404 comes first), and the message stays the one clients know
    if kind not in EVENT_KINDS:
        raise FieldError("kind", "unknown kind", where="query")
    ranks = [rank] if rank is not None else range(run.workers)
    out: dict[int, list[list[Any]]] = {}
    for r in ranks:
        points = series_points(s, run_id, kind, name, r, max_points, since)
        if points:
            out[r] = points
    return {
        "run_id": run_id,
        "kind": kind,
        "name": name,
        "columns": ["step", "epoch", "time", "value"],
        "ranks": {str(r): pts for r, pts in out.items()},
    }
