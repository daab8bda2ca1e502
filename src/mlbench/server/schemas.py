"""The API's request and response shapes (pydantic), and the row → JSON conversions.

Why they are declared rather than built as dicts in each route: the OpenAPI schema at
``/openapi.json`` is the contract (the CLI client, the dashboard and other tools code against
it), and FastAPI can only describe a response it has a model for. Each model spells today's JSON
exactly — field names, ISO timestamps as strings, nulls — because the dashboard's JavaScript and
the tests read those shapes; a model is a description of the wire format, not a new one.

Every string a client sends is bounded and free of control characters: PostgreSQL refuses NUL in
text and over-long varchar values with an error (a 500 if it got that far), SQLite stores them
silently, so validation has to stop them first, with the field named.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, NotRequired

from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from mlbench import limits
from mlbench.server.executor import run_files
from mlbench.server.models import Event, Run
from mlbench.server.states import RunState
from mlbench.vocab import EVENT_KINDS, Backend, EventKind, Goal, vocabularies

MAX_BATCH = 10_000
RUN_ID = limits.RUN_ID_PATTERN
NAME = r"^[A-Za-z0-9][A-Za-z0-9._/:+-]*$"  # tasks, algorithms
PRINTABLE = limits.PRINTABLE

# ---------------------------------------------------------------------------- requests


class RunRequest(BaseModel):
    task: str = Field(max_length=64, pattern=NAME, description="task name, see GET /api/tasks")
    workers: int = Field(1, ge=1, le=4096)
    backend: Backend = Backend.AUTO
    algorithm: str = Field("allreduce", max_length=128, pattern=NAME)
    goal: Goal = Goal.FULL
    overrides: list[Annotated[str, Field(max_length=1000, pattern=PRINTABLE)]] = Field(
        default_factory=list, max_length=200, description="config overrides, key=value"
    )
    repeats: int = Field(1, ge=1, le=100, description="independent runs of each configuration")
    workers_sweep: list[Annotated[int, Field(ge=1, le=4096)]] | None = Field(
        None, max_length=32, description="one run per worker count (replaces workers)"
    )
    sweep_id: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=RUN_ID,
        description="the sweep the runs belong to (mlbench sweep --master); list them with "
        "GET /api/runs?sweep=ID",
    )


class UploadFacts(BaseModel):
    """How a run's event upload ended, as the uploader saw it (``UploadStatus`` in
    ``telemetry/uploader.py``; also result.json's ``upload``)."""

    complete: bool = Field(description="every record of the run's event files is stored")
    uploaded: int = Field(0, ge=0, le=2**62, description="records the master acknowledged")
    quarantined: int = Field(
        0, ge=0, le=2**62, description="records the master refused (upload-quarantine.jsonl)"
    )
    pending: int = Field(0, ge=0, le=2**62, description="records not sent")
    reason: str | None = Field(None, max_length=10_000, pattern=r"^[^\x00]*$")
    drain_seconds: float | None = Field(None, ge=0, le=1e9, allow_inf_nan=False)


class UploadIn(UploadFacts):
    """An uploader's report: the facts, and which ranks they cover."""

    ranks: list[Annotated[int, Field(ge=0, le=1_000_000)]] | None = Field(
        None,
        max_length=4096,
        description="the ranks this report covers (one node's agent on a multi-node run); "
        "absent: the whole run",
    )


class ImportRequest(BaseModel):
    run_id: str = Field(min_length=1, max_length=64, pattern=RUN_ID)
    result: dict[str, Any] = Field(description="the run's result.json")


# Ingest is the master's hot path (benchmarks/ingest.py), so events are TypedDicts validated by
# one pydantic-core call straight from the request bytes: no json.loads into Python objects
# first, no Python validator per field, no model objects to dump again. Every rule is a core
# constraint (bounds, patterns, a Literal, allow_inf_nan=False), which keeps that call in Rust.
Finite = Annotated[float, Field(allow_inf_nan=False)]  # NaN and ±inf are sent as null


class EventIn(TypedDict):
    """One record of a rank's event file (docs/events.md), i.e. one row of the events table.

    Its bounds are ``mlbench.limits``, which the writer (``telemetry/events.make_record``)
    enforces too: a record the writer let through is one this schema accepts."""

    run_id: Annotated[str, Field(min_length=1, max_length=limits.RUN_ID_MAX, pattern=RUN_ID)]
    rank: Annotated[int, Field(ge=0, le=limits.RANK_MAX)]
    seq: Annotated[int, Field(ge=0, le=limits.SEQ_MAX)]
    time: Finite
    step: Annotated[int, Field(ge=0, le=limits.STEP_MAX)]
    epoch: Finite
    # a Literal of the plain strings (not the enum): validated in Rust, stored as text
    kind: Literal[tuple(sorted(k.value for k in EVENT_KINDS))]  # type: ignore[valid-type]
    name: Annotated[str, Field(min_length=1, max_length=limits.NAME_MAX, pattern=PRINTABLE)]
    value: Finite | None
    unit: NotRequired[Annotated[str, Field(max_length=limits.UNIT_MAX, pattern=PRINTABLE)] | None]


class EventBatch(TypedDict):
    events: Annotated[list[EventIn], Field(max_length=MAX_BATCH)]


EVENT_BATCH = TypeAdapter(EventBatch)


def inline_schema(adapter: TypeAdapter[Any]) -> dict[str, Any]:
    """The adapter's JSON schema with its ``$defs`` substituted in place: a request body schema
    in ``openapi_extra`` cannot refer to definitions of its own."""
    schema = adapter.json_schema()
    defs = schema.pop("$defs", {})

    def sub(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return sub(defs[ref.removeprefix("#/$defs/")])
            return {k: sub(v) for k, v in node.items()}
        if isinstance(node, list):
            return [sub(v) for v in node]
        return node

    return sub(schema)


MAX_ERRORS = 20  # a 422 lists at most this many problems (and says how many there were)
MAX_ECHO = 80  # characters of an offending input a 422 repeats back


def bounded_errors(errors: list[dict[str, Any]], total: int | None = None) -> list[dict[str, Any]]:
    """Validation errors as a 422 may send them: at most :data:`MAX_ERRORS`, each input echoed
    only when it is a short scalar. pydantic puts the whole offending input in every error; a
    probe's 1,000,000-event body came back as a 30 MB 422, so nothing unbounded is repeated."""
    out = []
    for e in errors[:MAX_ERRORS]:
        err = {k: v for k, v in e.items() if k not in ("input", "ctx", "url")}
        value = e.get("input")
        if isinstance(value, float) and not math.isfinite(value):
            err["input"] = str(value)  # JSON cannot hold NaN/inf
        elif isinstance(value, bool | int | float) or value is None:
            err["input"] = value
        elif isinstance(value, str):
            err["input"] = value if len(value) <= MAX_ECHO else value[:MAX_ECHO] + "…"
        ctx = e.get("ctx")
        if isinstance(ctx, dict):  # the constraint's parameters (max_length, pattern...)
            err["ctx"] = {k: v for k, v in ctx.items() if isinstance(v, str | int | float)}
        out.append(err)
    total = len(errors) if total is None else total
    if total > len(out):
        out.append(
            {
                "type": "too_many_errors",
                "loc": ["body"],
                "msg": f"{total - len(out)} more error(s) not listed",
            }
        )
    return out


def body_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """pydantic's errors located in the body, as FastAPI reports them, bounded."""
    errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
    return bounded_errors(errors, exc.error_count())


# ---------------------------------------------------------------------------- responses


class ErrorOut(BaseModel):
    """Every error but a 422: one line saying what is wrong."""

    detail: str


_ERROR_MEANING = {
    400: "the body is not JSON at all",
    401: "no bearer token, or an unknown one",
    403: "the token's scope does not allow this (an upload token, another run's, an ended run's)",
    404: "no such run (or no such file of it)",
    409: "the run's state forbids this (e.g. it is running, or has ended)",
    413: "the request body is larger than this endpoint's limit, or the batch has too many events",
}


def errors(*codes: int, json_beside: bool = False) -> dict[int | str, dict[str, Any]]:
    """The error responses a route declares in the OpenAPI schema (``responses=``), so the
    schema describes what the server does: the fuzz test checks every response against it.
    ``json_beside``: the route's own responses are not JSON (a stream), its errors still are —
    FastAPI would file a ``model`` under the route's media type, so the schema is spelled out."""
    if json_beside:
        ref = {"$ref": "#/components/schemas/ErrorOut"}
        return {
            code: {
                "description": _ERROR_MEANING[code],
                "content": {"application/json": {"schema": ref}},
            }
            for code in codes
        }
    return {code: {"model": ErrorOut, "description": _ERROR_MEANING[code]} for code in codes}


class RunOut(BaseModel):
    """A run as every endpoint returns it (and the stream's ``state`` message carries it)."""

    id: str
    task: str
    state: RunState
    reason: str | None
    workers: int
    backend: str  # free text: an imported run says what it ran on
    algorithm: str
    goal: str
    overrides: list[str]
    official: bool | None
    created_at: str | None = Field(description="ISO 8601, UTC")
    started_at: str | None
    finished_at: str | None
    result: dict[str, Any] | None = Field(description="its result.json, once it has one")
    has_logs: bool = Field(description="this master ran it: /logs and log streaming work")
    upload: UploadOut | None = Field(
        None,
        description="how its event upload ended; null until reported (while it runs, or a run "
        "imported from a result.json without upload facts). complete false: some events are "
        "not on this master; `mlbench import RUN_DIR` completes it",
    )
    sweep_id: str | None = Field(None, description="the sweep it belongs to, if any")


class UploadOut(UploadFacts):
    """A run's upload status as this master holds it: the uploader's report, checked against
    the events stored (a report of ``complete`` with fewer events stored is not complete)."""

    stored: int = Field(description="events this master held for the run when it was told")
    parts: dict[str, UploadFacts] | None = Field(
        None,
        description="a multi-node run: each node's own report, keyed by its ranks "
        '("0,1"); the fields above are their sum (complete only when every part is)',
    )


class RunsOut(BaseModel):
    runs: list[RunOut]


class IngestOut(BaseModel):
    received: int
    inserted: int = Field(description="how many were new (a retried batch inserts nothing)")


class LogsOut(BaseModel):
    text: str
    next_offset: int


class MetricOut(BaseModel):
    kind: EventKind
    name: str
    unit: str | None
    count: int


class MetricsOut(BaseModel):
    metrics: list[MetricOut]


class PhasesOut(BaseModel):
    run_id: str
    ranks: dict[str, dict[str, float]] = Field(description="rank → phase → seconds")
    last_step: dict[str, int] = Field(description="rank → the last step counted")


class SeriesOut(BaseModel):
    run_id: str
    kind: EventKind
    name: str
    columns: list[str]
    ranks: dict[str, list[list[Any]]] = Field(description="rank → points, one list per column")


class HealthOut(BaseModel):
    status: Literal["ok"]
    version: str
    database: str


class SettingsOut(BaseModel):
    version: str
    scheduler: bool
    capacity_workers: int | None
    backends: list[Backend]
    open_reads: bool


class VocabOut(BaseModel):
    """The words runs and the master use, so clients need not re-declare them."""

    run_states: list[RunState]
    terminal_states: list[RunState]
    transitions: dict[RunState, list[RunState]]
    phases: list[str]
    step_phases: list[str]
    event_kinds: list[str]
    stop_reasons: list[str]
    goals: list[str]
    backends: list[str]


def vocabulary() -> dict[str, Any]:
    """What ``/api/vocab`` and the dashboard's ``vocab.js`` serve (one source for both)."""
    from mlbench.server.states import RUN_STATES, TERMINAL_STATES, TRANSITIONS

    return {
        "run_states": [s.value for s in RUN_STATES],
        "terminal_states": [s.value for s in RUN_STATES if s in TERMINAL_STATES],
        "transitions": {
            s.value: [t.value for t in RUN_STATES if t in TRANSITIONS[s]] for s in TRANSITIONS
        },
        **vocabularies(),
    }


# ---------------------------------------------------------------------------- rows → JSON


def iso(dt: datetime | None) -> str | None:
    """ISO 8601 in UTC; SQLite returns naive datetimes (stored as UTC), PostgreSQL aware ones."""
    if dt is None:
        return None
    return (dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)).isoformat()


def run_json(run: Run) -> dict[str, Any]:
    """A run's JSON (``RunOut``'s fields) as a plain dict, for the stream and the zip too."""
    return {
        "id": run.id,
        "task": run.task,
        "state": run.state,
        "reason": run.reason,
        "workers": run.workers,
        "backend": run.backend,
        "algorithm": run.algorithm,
        "goal": run.goal,
        "overrides": run.overrides,
        "official": run.official,
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "result": run.result,
        "has_logs": run_files(run.executor_ref) is not None,
        "upload": run.upload,
        "sweep_id": run.sweep_id,
    }


def event_json(e: Event) -> dict[str, Any]:
    """An event row as the record its rank wrote (``unit`` only when it has one)."""
    out = {
        "run_id": e.run_id,
        "rank": e.rank,
        "seq": e.seq,
        "time": e.time,
        "step": e.step,
        "epoch": e.epoch,
        "kind": e.kind,
        "name": e.name,
        "value": e.value,
    }
    if e.unit is not None:
        out["unit"] = e.unit
    return out
