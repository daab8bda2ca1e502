"""FastAPI application: runs, their state machine, and idempotent batched event ingest.

Every invalid request is a 4xx naming the field; the OpenAPI schema FastAPI serves at
``/openapi.json`` is the contract.
"""

import io
import json
import math
import re
import secrets
import threading
import time
import zipfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, NotRequired

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import Session, sessionmaker
from typing_extensions import TypedDict

from mlbench import __version__
from mlbench.errors import MlbenchError
from mlbench.server import auth, db
from mlbench.server.eventstore import insert_events, series_points
from mlbench.server.models import RUN_STATES, TERMINAL_STATES, Event, Run, Token
from mlbench.server.stream import Cursor, CursorError, RunStream, read_from
from mlbench.telemetry.events import KINDS

# queued → running → finished | failed | cancelled; queued → cancelled
TRANSITIONS: dict[str, set[str]] = {
    "queued": {"running", "cancelled", "failed"},
    "running": {"finished", "failed", "cancelled"},
}
assert set(TRANSITIONS) <= set(RUN_STATES)
MAX_BATCH = 10_000
# Every string a client sends is bounded and free of control characters: PostgreSQL refuses NUL
# in text and over-long varchar values with an error (a 500 if it got that far), SQLite stores
# them silently, so validation has to stop them first, with the field named.
RUN_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
NAME = r"^[A-Za-z0-9][A-Za-z0-9._/:+-]*$"  # tasks, algorithms
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
RunId = Annotated[str, PathParam(max_length=64, pattern=RUN_ID, description="a run's id")]


class InvalidTransition(MlbenchError):
    pass


def transition(run: Run, new_state: str, reason: str | None = None) -> None:
    """Move ``run`` along the state machine; anything else is an error."""
    if new_state not in TRANSITIONS.get(run.state, set()):
        raise InvalidTransition(f"run {run.id} is {run.state}; it cannot become {new_state}")
    now = datetime.now(UTC)
    run.state = new_state
    if new_state == "running":
        run.started_at = now
    if new_state in TERMINAL_STATES:
        run.finished_at = now
        run.reason = reason


# ---------------------------------------------------------------------------- request models


class RunRequest(BaseModel):
    task: str = Field(max_length=64, pattern=NAME, description="task name, see GET /api/tasks")
    workers: int = Field(1, ge=1, le=4096)
    backend: Literal["auto", "gloo", "nccl", "mpi"] = "auto"
    algorithm: str = Field("allreduce", max_length=128, pattern=NAME)
    goal: Literal["full", "light"] = "full"
    overrides: list[Annotated[str, Field(max_length=1000, pattern=PRINTABLE)]] = Field(
        default_factory=list, max_length=200, description="config overrides, key=value"
    )
    repeats: int = Field(1, ge=1, le=100, description="independent runs of each configuration")
    workers_sweep: list[Annotated[int, Field(ge=1, le=4096)]] | None = Field(
        None, max_length=32, description="one run per worker count (replaces workers)"
    )


# Ingest is the master's hot path (benchmarks/ingest.py), so events are TypedDicts validated by
# one pydantic-core call straight from the request bytes: no json.loads into Python objects
# first, no Python validator per field, no model objects to dump again. Every rule is a core
# constraint (bounds, patterns, a Literal, allow_inf_nan=False), which keeps that call in Rust.
Finite = Annotated[float, Field(allow_inf_nan=False)]  # NaN and ±inf are sent as null


class EventIn(TypedDict):
    """One record of a rank's event file (docs/events.md), i.e. one row of the events table."""

    run_id: Annotated[str, Field(max_length=64, pattern=RUN_ID)]
    rank: Annotated[int, Field(ge=0, le=1_000_000)]
    seq: Annotated[int, Field(ge=0, le=2**62)]
    time: Finite
    step: Annotated[int, Field(ge=0, le=2**62)]
    epoch: Finite
    kind: Literal[tuple(sorted(KINDS))]  # type: ignore[valid-type]
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=PRINTABLE)]
    value: Finite | None
    unit: NotRequired[Annotated[str, Field(max_length=16, pattern=PRINTABLE)] | None]


class EventBatch(TypedDict):
    events: Annotated[list[EventIn], Field(max_length=MAX_BATCH)]


EVENT_BATCH = TypeAdapter(EventBatch)


def _inline_schema(adapter: TypeAdapter[Any]) -> dict[str, Any]:
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


def _body_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """pydantic's errors located in the body, as FastAPI reports them; a NaN/inf input is echoed
    as text (the JSON response could not hold it)."""
    errors = []
    for e in exc.errors(include_url=False):
        err: dict[str, Any] = {**e, "loc": ("body", *e["loc"])}
        if isinstance(err.get("input"), float) and not math.isfinite(err["input"]):
            err["input"] = str(err["input"])
        errors.append(err)
    return errors


async def _raw_body(request: Request) -> bytes:
    return await request.body()


class ImportRequest(BaseModel):
    run_id: str = Field(min_length=1, max_length=64, pattern=RUN_ID)
    result: dict[str, Any] = Field(description="the run's result.json")


def _run_json(run: Run) -> dict[str, Any]:
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
        "created_at": _iso(run.created_at),
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "result": run.result,
        "has_logs": run.run_dir is not None,  # this master ran it: /logs and log streaming work
    }


_last_stamp = datetime.min.replace(tzinfo=UTC)
_stamp_lock = threading.Lock()


def _next_stamp(after: datetime | None = None) -> datetime:
    """A creation time later than every earlier one handed out by this process."""
    global _last_stamp
    with _stamp_lock:
        now = datetime.now(UTC)
        floor = max(_last_stamp, after or _last_stamp) + timedelta(microseconds=1)
        _last_stamp = max(now, floor)
        return _last_stamp


def _iso(dt: datetime | None) -> str | None:
    """ISO 8601 in UTC; SQLite returns naive datetimes (stored as UTC), PostgreSQL aware ones."""
    if dt is None:
        return None
    return (dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)).isoformat()


def _event_json(e: Event) -> dict[str, Any]:
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


def _field_error(field: str | list[str | int], message: str, status: int = 422) -> HTTPException:
    loc = ["body", *(field if isinstance(field, list) else [field])]
    return HTTPException(status, detail=[{"loc": loc, "msg": message}])


def _blame(req: RunRequest, message: str) -> list[str | int]:
    """Which request field a config error is about: the override whose key the message names,
    else the worker count(s) (``task.validate`` checks the config against them)."""
    keys = [line.split("=", 1)[0].strip() for line in req.overrides]
    for i, key in enumerate(keys):  # the full key ("algorithm.topology: ...")
        if key and key in message:
            return ["overrides", i]
    for i, key in enumerate(keys):  # or its last part as a word ("topology torus needs ...")
        last = key.rsplit(".", 1)[-1]
        if last and re.search(rf"\b{re.escape(last)}\b", message):
            return ["overrides", i]
    return ["workers_sweep"] if req.workers_sweep else ["workers"]


# ---------------------------------------------------------------------------- the app


@dataclass
class SchedulerSettings:
    """Run execution by this master (off: the API only records runs, e.g. in API tests)."""

    master_url: str
    runs_dir: Path
    capacity_workers: int
    data_dir: str | None = None
    poll_seconds: float = 0.5


def create_app(
    engine: Engine | None = None,
    scheduler: SchedulerSettings | None = None,
    *,
    open_reads: bool = False,
    stream_interval: float = 0.5,
) -> FastAPI:
    """The master. Writes need a bearer token; reads too unless ``open_reads``.
    ``stream_interval``: how often a live stream looks for new events and log lines."""
    engine = engine or db.make_engine(db.database_url())
    db.upgrade(engine)
    sessions: sessionmaker[Session] = db.session_factory(engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        running = None
        if scheduler is not None:
            from mlbench.server.executor import LocalExecutor
            from mlbench.server.scheduler import Scheduler

            running = Scheduler(
                sessions,
                LocalExecutor(scheduler.runs_dir, scheduler.master_url, scheduler.capacity_workers),
                capacity_workers=scheduler.capacity_workers,
                data_dir=scheduler.data_dir,
                poll_seconds=scheduler.poll_seconds,
            )
            running.start()
        yield
        if running is not None:
            running.stop()

    app = FastAPI(title="mlbench master", version=__version__, lifespan=lifespan)
    app.state.engine = engine

    def session() -> Iterator[Session]:
        with sessions() as s:
            yield s

    # "function" scope: the session closes when the endpoint returns, not when its response has
    # been sent, so a long-lived stream never holds a pooled connection
    SessionDep = Annotated[Session, Depends(session, scope="function")]
    bearer = HTTPBearer(auto_error=False)

    def caller(
        s: SessionDep, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
    ) -> Token | None:
        if creds is None:
            return None
        token = auth.lookup(s, creds.credentials)
        if token is None:
            raise HTTPException(401, detail="invalid token", headers={"WWW-Authenticate": "Bearer"})
        return token

    Caller = Annotated[Token | None, Depends(caller)]

    def admin(token: Caller) -> Token:
        if token is None:
            raise HTTPException(
                401, detail="a bearer token is required", headers={"WWW-Authenticate": "Bearer"}
            )
        if token.scope != "admin":
            raise HTTPException(403, detail=f"a {token.scope} token cannot do this")
        return token

    def reader(token: Caller) -> None:
        if not open_reads:
            admin(token)

    Admin = Depends(admin)
    Reader = Depends(reader)

    @app.exception_handler(InvalidTransition)
    async def _conflict(request: Request, exc: InvalidTransition) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    def get_run(s: Session, run_id: str) -> Run:
        run = s.get(Run, run_id)
        if run is None:
            raise HTTPException(404, detail=f"run {run_id!r} not found")
        return run

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        with engine.connect() as conn:
            conn.execute(select(1))
        return {"status": "ok", "version": __version__, "database": engine.dialect.name}

    @app.get("/api/tasks", dependencies=[Reader])
    def tasks() -> list[dict[str, Any]]:
        from mlbench.registry import get_task, task_names

        return [get_task(name).spec() for name in task_names()]

    @app.get("/api/algorithms", dependencies=[Reader])
    def algorithms() -> list[dict[str, Any]]:
        """Every communication scheme, with the ``algorithm.*`` options it reads."""
        from mlbench.runs import algorithm_specs

        return algorithm_specs()

    @app.get("/api/settings", dependencies=[Reader])
    def settings() -> dict[str, Any]:
        """What this master offers a run form: worker capacity, backends, scheduling on/off."""
        return {
            "version": __version__,
            "scheduler": scheduler is not None,
            "capacity_workers": scheduler.capacity_workers if scheduler else None,
            "backends": ["auto", "gloo", "nccl", "mpi"],
            "open_reads": open_reads,
        }

    @app.post("/api/runs", status_code=201, dependencies=[Admin])
    def create_runs(req: RunRequest, s: SessionDep) -> dict[str, Any]:
        from mlbench.registry import get_task, task_names
        from mlbench.runs import resolve_config, validate_run

        if req.task not in task_names():
            raise _field_error("task", f"unknown task {req.task!r}; known: {task_names()}")
        from mlbench.registry import get_algorithm

        try:
            get_algorithm(req.algorithm)
        except MlbenchError as exc:
            raise _field_error("algorithm", str(exc)) from None
        for i, line in enumerate(req.overrides):  # each line alone first: blame the exact one
            try:
                resolve_config(req.task, overrides=[line])
            except MlbenchError as exc:
                raise _field_error(["overrides", i], str(exc)) from None
        overrides = [*req.overrides, f"goal={req.goal}", f"algorithm.name={req.algorithm}"]
        try:
            task, cfg = resolve_config(req.task, overrides=overrides)
        except MlbenchError as exc:
            raise _field_error("overrides", str(exc)) from None
        for k in req.workers_sweep or [req.workers]:
            try:
                validate_run(task, cfg, k)
            except MlbenchError as exc:
                raise _field_error(_blame(req, str(exc)), str(exc)) from None
        official = not get_task(req.task).official_differences(cfg)
        created = []
        # FIFO order is submission order: stamp it here, strictly increasing, at microsecond
        # resolution (SQLite's now() has whole seconds, so same-second runs would tie)
        stamp = _next_stamp()
        for workers in req.workers_sweep or [req.workers]:
            for _ in range(req.repeats):
                stamp = _next_stamp(stamp)
                run = Run(
                    created_at=stamp,
                    id=f"{time.strftime('%Y%m%d-%H%M%S')}-{req.task}-{secrets.token_hex(3)}",
                    task=req.task,
                    state="queued",
                    workers=workers,
                    backend=req.backend,
                    algorithm=req.algorithm,
                    goal=req.goal,
                    overrides=list(req.overrides),
                    official=official,
                )
                s.add(run)
                created.append(run)
        s.commit()
        return {"runs": [_run_json(r) for r in created]}

    @app.post("/api/runs/import", dependencies=[Admin])
    def import_run(req: ImportRequest, s: SessionDep) -> dict[str, Any]:
        """Record a run that ran elsewhere (``mlbench import``); re-importing updates it."""
        from mlbench.results.summary import migrate

        try:
            result = migrate(dict(req.result))
        except (ValueError, KeyError, TypeError) as exc:
            raise _field_error("result", f"not a result.json: {exc}") from None
        state = result.get("state")
        if state not in TERMINAL_STATES:
            raise _field_error("result", f"state must be one of {TERMINAL_STATES}, not {state!r}")
        goal = result.get("goal")
        fields = {
            "task": (result.get("task", ""), 64),
            "backend": (result.get("backend") or "auto", 16),
            "algorithm": (result.get("algorithm") or "", 128),
            "goal": (goal.get("goal", "full") if isinstance(goal, dict) else "full", 8),
            "reason": (result.get("reason") or "", 10_000),
        }
        for key, (value, limit) in fields.items():
            if not isinstance(value, str) or len(value) > limit or "\x00" in value:
                raise _field_error(
                    "result", f"{key} must be a string of at most {limit} characters, no NUL"
                )
        workers = result.get("world_size") or 1
        if not isinstance(workers, int) or not 1 <= workers <= 1_000_000:
            raise _field_error("result", "world_size must be an integer from 1 to 1,000,000")
        run = s.get(Run, req.run_id)
        if run is None:
            run = Run(
                id=req.run_id,
                task=fields["task"][0],
                state=state,
                workers=workers,
                backend=fields["backend"][0],
                algorithm=fields["algorithm"][0],
                goal=fields["goal"][0],
                overrides=[],
            )
            s.add(run)
        run.state, run.reason = state, result.get("reason")
        run.official, run.result = bool(result.get("official")), result
        run.finished_at = datetime.now(UTC)
        s.commit()
        return _run_json(run)

    @app.get("/api/runs", dependencies=[Reader])
    def list_runs(
        s: SessionDep,
        state: Literal["queued", "running", "finished", "failed", "cancelled"] | None = None,
        task: str | None = Query(None, max_length=64, pattern=NAME),
        official: bool | None = None,
        limit: int = Query(100, ge=1, le=1000),
        offset: int = Query(0, ge=0, le=2**53),
    ) -> dict[str, Any]:
        q = select(Run)
        if state is not None:
            q = q.where(Run.state == state)
        if task is not None:
            q = q.where(Run.task == task)
        if official is not None:
            q = q.where(Run.official == official)
        rows = s.scalars(q.order_by(Run.created_at.desc(), Run.id).limit(limit).offset(offset))
        return {"runs": [_run_json(r) for r in rows]}

    @app.get("/api/runs/{run_id}", dependencies=[Reader])
    def get_one(run_id: RunId, s: SessionDep) -> dict[str, Any]:
        return _run_json(get_run(s, run_id))

    @app.post("/api/runs/{run_id}/cancel", dependencies=[Admin])
    def cancel(run_id: RunId, s: SessionDep) -> dict[str, Any]:
        run = get_run(s, run_id)
        transition(run, "cancelled", "cancelled by user")
        s.commit()
        return _run_json(run)

    @app.delete("/api/runs/{run_id}", status_code=204, dependencies=[Admin])
    def delete_run(run_id: RunId, s: SessionDep) -> None:
        run = get_run(s, run_id)
        if run.state == "running" or run.pid is not None:
            raise HTTPException(409, detail=f"run {run_id} is running; cancel it first")
        s.execute(delete(Event).where(Event.run_id == run_id))
        s.delete(run)
        s.commit()

    @app.get("/api/runs/{run_id}/logs", dependencies=[Reader])
    def logs(
        run_id: RunId,
        s: SessionDep,
        rank: int = Query(0, ge=0, le=100_000),
        stream: Literal["stdout", "stderr"] = "stdout",
        offset: int = Query(0, ge=0, le=2**53),
        limit: int = Query(65536, ge=1, le=1 << 20),
    ) -> dict[str, Any]:
        """A rank's stdout/stderr from byte ``offset`` (poll with ``next_offset`` to follow)."""
        run = get_run(s, run_id)
        if run.run_dir is None:
            raise HTTPException(404, detail=f"run {run_id} has no logs on this master")
        data = read_from(Path(run.run_dir) / f"rank-{rank}.{stream}", offset, limit)
        return {"text": data.decode("utf-8", "replace"), "next_offset": offset + len(data)}

    @app.get("/api/runs/{run_id}/download", dependencies=[Reader])
    def download(run_id: RunId, s: SessionDep) -> Response:
        """Everything the run produced, as a zip: result.json, the config, per-rank events (from
        the database) and, when this master ran it, every file of its run directory."""
        run = get_run(s, run_id)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(f"{run_id}/run.json", json.dumps(_run_json(run), indent=2))
            if run.result is not None:
                zf.writestr(f"{run_id}/result.json", json.dumps(run.result, indent=2))
            ranks = s.scalars(select(Event.rank).where(Event.run_id == run_id).distinct())
            for rank in sorted(ranks):
                rows = s.scalars(
                    select(Event)
                    .where(Event.run_id == run_id, Event.rank == rank)
                    .order_by(Event.seq)
                )
                lines = (json.dumps(_event_json(e), separators=(",", ":")) for e in rows)
                zf.writestr(f"{run_id}/events/rank-{rank}.jsonl", "\n".join(lines) + "\n")
            if run.run_dir and Path(run.run_dir).is_dir():
                for f in sorted(Path(run.run_dir).iterdir()):
                    if f.is_file():
                        zf.write(f, f"{run_id}/files/{f.name}")
        return Response(
            buf.getvalue(),
            media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="{run_id}.zip"'},
        )

    @app.post(
        "/api/runs/{run_id}/events",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _inline_schema(EVENT_BATCH)}},
            }
        },
    )
    def ingest(
        run_id: RunId,
        body: Annotated[bytes, Depends(_raw_body)],
        s: SessionDep,
        token: Caller,
    ) -> dict[str, int]:
        """Idempotent by (run, rank, seq): a retried batch inserts nothing twice. Needs an admin
        token or the upload token of this run. Body: ``{"events": [...]}``, at most 10,000."""
        if token is None:
            raise HTTPException(401, detail="a bearer token is required")
        if token.scope != "admin" and token.run_id != run_id:
            raise HTTPException(403, detail="this upload token belongs to another run")
        try:
            events = EVENT_BATCH.validate_json(body)["events"]
        except ValidationError as exc:  # the same 422 FastAPI gives for a declared body
            raise RequestValidationError(_body_errors(exc)) from None
        run = get_run(s, run_id)
        rows = []
        for i, e in enumerate(events):
            if e["run_id"] != run_id:
                raise _field_error(f"events[{i}].run_id", f"is {e['run_id']!r}, not {run_id!r}")
            if e["rank"] >= run.workers:
                raise _field_error(f"events[{i}].rank", f"run {run_id} has {run.workers} ranks")
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
            return {"received": 0, "inserted": 0}
        inserted = insert_events(s, engine, rows)  # commits
        return {"received": len(rows), "inserted": inserted}

    @app.get("/api/runs/{run_id}/metrics", dependencies=[Reader])
    def metrics(run_id: RunId, s: SessionDep) -> dict[str, Any]:
        """Which (kind, name) series the run has, with their unit and event count."""
        get_run(s, run_id)
        # (kind, name) counts come from the series index alone; the unit is read from one row
        # per metric (a max(unit) over all rows cost ~2 s on a 1M-event run)
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
        return {"metrics": out}

    @app.get("/api/runs/{run_id}/phases", dependencies=[Reader])
    def phases(
        run_id: RunId,
        s: SessionDep,
        until_step: int | None = Query(
            None, ge=0, le=2**62, description="only phase events at steps ≤ this (the target's)"
        ),
    ) -> dict[str, Any]:
        """Seconds per phase per rank, summed over every ``phase`` event so far (exact while
        the run is live, unlike a sum over a down-sampled series)."""
        get_run(s, run_id)
        conds = [Event.run_id == run_id, Event.kind == "phase"]
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
        return {"run_id": run_id, "ranks": ranks, "last_step": steps}

    def stream_source(
        run_id: RunId,
        s: SessionDep,
        kind: Annotated[
            list[str] | None, Query(max_length=len(KINDS), description="only these kinds")
        ] = None,
        logs: bool = Query(True, description="also stream stdout/stderr lines"),
        events: bool = Query(True, description="stream events (false: state and logs only)"),
        from_now: bool = Query(False, description="skip what the run produced so far"),
        cursor: str | None = Query(None, max_length=200_000, description="resume here"),
        last_event_id: str | None = Header(None, max_length=200_000),
    ) -> RunStream:
        run = get_run(s, run_id)
        for k in kind or []:
            if k not in KINDS:
                raise HTTPException(
                    422, detail=[{"loc": ["query", "kind"], "msg": f"unknown kind {k!r}"}]
                )
        position = last_event_id or cursor  # a reconnecting EventSource sends the header
        try:
            if position:
                start = Cursor.parse(position, run.workers)
            elif from_now:
                start = RunStream.now_cursor(sessions, run, run.workers)
            else:
                start = Cursor.start(run.workers)
        except CursorError as exc:
            field = ["header", "last-event-id"] if last_event_id else ["query", "cursor"]
            raise HTTPException(422, detail=[{"loc": field, "msg": str(exc)}]) from None
        return RunStream(
            sessions,
            run_id,
            start,
            kinds=kind,
            logs=logs,
            events=events,
            run_json=_run_json,
            event_json=_event_json,
        )

    @app.get("/api/runs/{run_id}/stream", response_class=EventSourceResponse, dependencies=[Reader])
    async def stream(
        source: Annotated[RunStream, Depends(stream_source)],
    ) -> AsyncIterator[ServerSentEvent]:
        """Server-Sent Events: ``state`` (the run, first and on every change), ``events`` (new
        events of one rank, in seq order), ``log`` (new stdout/stderr text of one rank) and a last
        ``end`` once the run has ended and everything it produced was sent. Each message's id is
        a cursor; reconnecting with it as ``Last-Event-ID`` (browsers do) or ``?cursor=``
        resumes without gaps or repeats."""
        async for name, data, position in source.messages(stream_interval):
            yield ServerSentEvent(event=name, data=data, id=position)

    @app.get("/api/runs/{run_id}/series", dependencies=[Reader])
    def series(
        run_id: RunId,
        s: SessionDep,
        kind: str = Query(max_length=16),
        name: str = Query(max_length=64, pattern=PRINTABLE),
        rank: int | None = Query(None, ge=0, le=1_000_000),
        since: float | None = Query(None, description="only events with time > since"),
        max_points: int = Query(1000, ge=1, le=100_000),
    ) -> dict[str, Any]:
        """One metric's time series per rank, down-sampled on the server to ≤ max_points per rank
        (evenly spaced in steps), plus each rank's last point. Index seeks only: the cost grows
        with max_points, not with the run's length (see mlbench.server.eventstore)."""
        run = get_run(s, run_id)
        if kind not in KINDS:
            raise HTTPException(422, detail=[{"loc": ["query", "kind"], "msg": "unknown kind"}])
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

    from mlbench.server.dashboard import mount_dashboard

    mount_dashboard(app)  # after the API routes: the dashboard never shadows /api
    return app
