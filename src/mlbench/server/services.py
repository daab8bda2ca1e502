"""What the master does with runs, apart from HTTP: create (with sweeps and repeats), import,
cancel, delete, and the config a run executes.

Why not in the route functions: the rules here (which request field a config error blames,
FIFO creation stamps, what an imported result must hold, when a run may be deleted) are the
master's behaviour, and the scheduler needs one of them too (the config of a run queued before
configs were stored). Routes parse the request and shape the response; this module decides.
Errors are ``FieldError`` (a 422 naming the request field) or ``InvalidTransition`` (a 409),
turned into responses by handlers that ``create_app`` installs.
"""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from mlbench.config import to_dict
from mlbench.errors import MlbenchError
from mlbench.server.models import Event, Run
from mlbench.server.schemas import ImportRequest, RunRequest, UploadIn
from mlbench.server.states import TERMINAL_STATES, RunState, transition


class FieldError(MlbenchError):
    """A request field is wrong: a 422 with FastAPI's error shape, located in the body (or
    ``where``: "query", "header")."""

    def __init__(self, field: str | list[str | int], message: str, where: str = "body") -> None:
        super().__init__(message)
        self.loc: list[str | int] = [where, *(field if isinstance(field, list) else [field])]
        self.message = message


class RunBusy(MlbenchError):
    """The run may still be executing (a 409)."""


def resolve_run_config(
    task: str,
    overrides: list[str],
    goal: str,
    algorithm: str,
    data_dir: str | None,
) -> tuple[Any, Any]:
    """(task, resolved config) of a run request: its overrides, then goal and scheme, then the
    master's data directory unless the request set ``data.dir`` itself.

    The data directory is filled in here, at submission, so the stored config is exactly what the
    executor runs (the old launcher added ``--data-dir`` at launch; same rule, same result)."""
    from mlbench.runs import resolve_config

    extra = [f"goal={goal}", f"algorithm.name={algorithm}"]
    if data_dir and not any(o.split("=", 1)[0].strip() == "data.dir" for o in overrides):
        extra.append(f"data.dir={data_dir}")
    return resolve_config(task, overrides=[*overrides, *extra])


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


_last_stamp = datetime.min.replace(tzinfo=UTC)
_stamp_lock = threading.Lock()


def _next_stamp(after: datetime | None = None) -> datetime:
    """A creation time later than every earlier one handed out by this process.

    FIFO order is submission order, so creation times must be strictly increasing at microsecond
    resolution (SQLite's now() has whole seconds: same-second runs would tie)."""
    global _last_stamp
    with _stamp_lock:
        now = datetime.now(UTC)
        floor = max(_last_stamp, after or _last_stamp) + timedelta(microseconds=1)
        _last_stamp = max(now, floor)
        return _last_stamp


def _refuse_what_reaches_the_master(req: RunRequest) -> None:
    """What a run request may not make the *master* do, whoever sends it: import code named in
    the request (``module:Class`` plug-ins run where the user runs ``mlbench run``; the master
    schedules installed schemes, entry points, only), or read a file named in it (a gossip
    mixing matrix is inline JSON over the API: a path would be read, and its content or its
    existence echoed in errors, on the master's machine)."""
    if ":" in req.algorithm:
        raise FieldError(
            "algorithm",
            f"{req.algorithm!r} names a module: the master does not import code named in a "
            "request. Install the scheme as an `mlbench.algorithms` entry point on the "
            "master, or run it with `mlbench run` (docs/adding-an-algorithm.md)",
        )
    for i, line in enumerate(req.overrides):
        key, _, value = line.partition("=")
        if key.strip() == "algorithm.mixing_matrix" and not value.strip().startswith(("[", "{")):
            raise FieldError(
                ["overrides", i],
                "over the API a mixing matrix is inline JSON rows, e.g. "
                "[[0.5,0.5],[0.5,0.5]]; the master does not read files named in a request",
            )


def create_runs(s: Session, req: RunRequest, data_dir: str | None = None) -> list[Run]:
    """Check the request completely, then queue one run per (worker count, repeat) and commit.

    Nothing is stored unless every configuration of the sweep is valid; the error names the
    request field to fix (the exact override line when it can tell)."""
    from mlbench.registry import get_algorithm, task_names
    from mlbench.runs import new_run_id, resolve_config, validate_run

    if req.task not in task_names():
        raise FieldError("task", f"unknown task {req.task!r}; known: {task_names()}")
    _refuse_what_reaches_the_master(req)
    try:
        get_algorithm(req.algorithm)
    except MlbenchError as exc:
        raise FieldError("algorithm", str(exc)) from None
    for i, line in enumerate(req.overrides):  # each line alone first: blame the exact one
        try:
            # with the request's scheme: its section decides which algorithm.* keys exist
            resolve_config(req.task, overrides=[f"algorithm.name={req.algorithm}", line])
        except MlbenchError as exc:
            raise FieldError(["overrides", i], str(exc)) from None
    try:
        task, cfg = resolve_run_config(req.task, req.overrides, req.goal, req.algorithm, data_dir)
    except MlbenchError as exc:
        raise FieldError("overrides", str(exc)) from None
    for k in req.workers_sweep or [req.workers]:
        try:
            validate_run(task, cfg, k)
        except MlbenchError as exc:
            raise FieldError(_blame(req, str(exc)), str(exc)) from None
    official = not task.official_differences(cfg)
    config = to_dict(cfg)
    created = []
    stamp = _next_stamp()
    for workers in req.workers_sweep or [req.workers]:
        for _ in range(req.repeats):
            stamp = _next_stamp(stamp)
            run = Run(
                created_at=stamp,
                id=new_run_id(req.task),
                task=req.task,
                state=RunState.QUEUED.value,
                workers=workers,
                backend=req.backend.value,
                algorithm=req.algorithm,
                goal=req.goal.value,
                overrides=list(req.overrides),
                official=official,
                config=config,
                sweep_id=req.sweep_id,
            )
            s.add(run)
            created.append(run)
    s.commit()
    return created


def run_config(run: Run, data_dir: str | None) -> dict[str, Any]:
    """The resolved config a run executes: the one stored at submission, or — for a run queued
    before migration 0004 stored configs — resolved now from its columns, as the master did
    then. Raises ``MlbenchError`` when that no longer resolves (a task or key that is gone)."""
    if run.config is not None:
        return run.config
    _, cfg = resolve_run_config(run.task, run.overrides, run.goal, run.algorithm, data_dir)
    return to_dict(cfg)


_IMPORT_LIMITS = {"task": 64, "backend": 16, "algorithm": 128, "goal": 8, "reason": 10_000}


def _check_reimport(run: Run, state: str) -> None:
    """A run this master knows may be imported over only when no executor of this master holds
    it, and never to change how it ended (409, ``RunBusy``): not while it runs here (its
    launcher still writes it), not to turn a finished run into a failed one. A queued run that
    nothing here admitted may take the outcome of where it really ran (``mlbench run --upload
    --run-id``, then ``mlbench import``)."""
    if run.active or run.state == RunState.RUNNING:
        raise RunBusy(
            f"run {run.id} is running on this master; an import cannot overwrite it "
            "(cancel it first)"
        )
    if run.state in TERMINAL_STATES and run.state != state:
        raise RunBusy(
            f"run {run.id} ended {run.state} on this master; an import cannot make it {state}"
        )


def import_run(s: Session, req: ImportRequest) -> Run:
    """Record a run that ran elsewhere (``mlbench import``); re-importing updates it.

    An import records an outcome: a new run is stored in the result's (terminal) state. It never
    moves an existing run along the state machine (:func:`_check_reimport`): re-importing a run
    that ended here updates its result and completes its events, nothing more."""
    from mlbench.results.summary import migrate

    try:
        result = migrate(dict(req.result))
    except (ValueError, KeyError, TypeError) as exc:
        raise FieldError("result", f"not a result.json: {exc}") from None
    state = result.get("state")
    if not isinstance(state, str) or state not in TERMINAL_STATES:
        terminal = sorted(str(t) for t in TERMINAL_STATES)
        raise FieldError("result", f"state must be one of {terminal}, not {state!r}")
    goal = result.get("goal")
    fields = {
        "task": result.get("task", ""),
        "backend": result.get("backend") or "auto",
        "algorithm": result.get("algorithm") or "",
        "goal": goal.get("goal", "full") if isinstance(goal, dict) else "full",
        "reason": result.get("reason") or "",
    }
    for key, value in fields.items():
        limit = _IMPORT_LIMITS[key]
        if not isinstance(value, str) or len(value) > limit or "\x00" in value:
            raise FieldError(
                "result", f"{key} must be a string of at most {limit} characters, no NUL"
            )
    workers = result.get("world_size") or 1
    if not isinstance(workers, int) or not 1 <= workers <= 1_000_000:
        raise FieldError("result", "world_size must be an integer from 1 to 1,000,000")
    run = s.get(Run, req.run_id)
    if run is not None:
        _check_reimport(run, state)
    if run is None:
        run = Run(
            id=req.run_id,
            task=fields["task"],
            state=state,
            workers=workers,
            backend=fields["backend"],
            algorithm=fields["algorithm"],
            goal=fields["goal"],
            overrides=[],
        )
        s.add(run)
    run.state, run.reason = state, result.get("reason")
    run.official, run.result = bool(result.get("official")), result
    run.finished_at = datetime.now(UTC)
    record_upload_from_result(s, run)
    s.commit()
    return run


def record_upload(s: Session, run: Run, status: UploadIn) -> None:
    """Keep how the run's upload ended (``runs.upload``, and ``upload`` in its result), checked
    against what is stored: a report of ``complete`` while this master holds fewer events than
    were acknowledged is recorded as incomplete. The caller commits.

    Why check: the report comes from the uploader, but completeness is a fact about this
    database (an import into a fresh master, a run deleted and re-imported without events)."""
    stored = s.scalar(select(func.count()).select_from(Event).where(Event.run_id == run.id)) or 0
    upload = _merge_reports(run.upload, status)
    if upload["complete"] and stored < upload["uploaded"]:
        upload["complete"] = False
        upload["reason"] = (
            f"this master holds {stored} of the run's {upload['uploaded']} uploaded events; "
            "`mlbench import RUN_DIR` sends them again"
        )
    run.upload = {**upload, "stored": int(stored)}
    if isinstance(run.result, dict):  # one truth: the stored result says the same
        run.result = {**run.result, "upload": upload}


#: partial (per-node) upload reports kept for one run; a node reports once per upload
MAX_UPLOAD_PARTS = 1024
#: the longest reason a report may carry (UploadFacts.reason)
REASON_MAX = 10_000


def _rank_ranges(ranks: list[int]) -> str:
    """A node's ranks as compact ranges (``"0-3,8"``): the key its report is kept under."""
    out: list[str] = []
    ordered = sorted(set(ranks))
    start = prev = ordered[0]
    for r in [*ordered[1:], None]:
        if r is not None and r == prev + 1:
            prev = r
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if r is not None:
            start = prev = r
    return ",".join(out)


def _merge_reports(previous: Any, status: UploadIn) -> dict[str, Any]:
    """One upload status from every node's report: on a multi-node run each node's agent
    reports only its own ranks (``ranks``), so a later complete report must not hide an
    earlier incomplete one. Reports are kept per rank set (``parts``) and summed; a report for
    the whole run (no ``ranks``: a single launcher, ``mlbench import``) replaces them."""
    report = status.model_dump(exclude={"ranks"})
    if not status.ranks:
        return report
    parts = dict(previous.get("parts") or {}) if isinstance(previous, dict) else {}
    key = _rank_ranges(status.ranks)
    if key not in parts and len(parts) >= MAX_UPLOAD_PARTS:
        raise FieldError(
            "ranks", f"more than {MAX_UPLOAD_PARTS} partial upload reports for one run"
        )
    parts[key] = report
    values = list(parts.values())
    reasons = "; ".join(f"ranks {k}: {p['reason']}" for k, p in parts.items() if p.get("reason"))
    if len(reasons) > REASON_MAX:  # the stored reason obeys the same bound as a reported one
        reasons = reasons[: REASON_MAX - 1] + "…"
    drains = [p["drain_seconds"] for p in values if p.get("drain_seconds") is not None]
    return {
        "complete": all(p["complete"] for p in values),
        "uploaded": sum(p["uploaded"] for p in values),
        "quarantined": sum(p["quarantined"] for p in values),
        "pending": sum(p["pending"] for p in values),
        "reason": reasons or None,
        "drain_seconds": max(drains) if drains else None,
        "parts": parts,
    }


def record_upload_from_result(s: Session, run: Run) -> None:
    """The ``upload`` of the run's result.json, when it has a valid one (a launcher that could
    not reach the master at the end wrote it there only)."""
    facts = run.result.get("upload") if isinstance(run.result, dict) else None
    if not isinstance(facts, dict):
        return
    try:
        status = UploadIn.model_validate(facts)
    except ValidationError:
        return  # not ours to refuse here: the result is kept as it is
    record_upload(s, run, status)


def cancel_run(s: Session, run: Run) -> None:
    """Cancel a queued or running run (the scheduler then stops its launcher, if any)."""
    transition(run, RunState.CANCELLED, "cancelled by user")
    s.commit()


def delete_run(s: Session, run: Run) -> None:
    """Delete a run and its events; refused while its executor may still be running it."""
    if run.state == RunState.RUNNING or run.active:
        raise RunBusy(f"run {run.id} is running; cancel it first")
    # the run row first (FOR UPDATE; SQLite ignores it and serialises writers anyway): an
    # ingest holding it commits first, so its events are deleted below; one arriving later
    # finds no run. PostgreSQL's events have no foreign key to do this (migration 0008).
    s.execute(select(Run.id).where(Run.id == run.id).with_for_update())
    s.execute(delete(Event).where(Event.run_id == run.id))
    s.delete(run)
    s.commit()
