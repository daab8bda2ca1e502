"""Runs: create (one per worker count × repeat), list, get, cancel, delete, import, and what a
run left behind (a rank's logs, everything as a zip)."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response
from sqlalchemy import select

from mlbench.server import services
from mlbench.server.deps import Admin, Reader, RunId, SessionDep, State, get_run
from mlbench.server.executor import run_files
from mlbench.server.models import Event, Run
from mlbench.server.schemas import (
    NAME,
    RUN_ID,
    ImportRequest,
    LogsOut,
    RunOut,
    RunRequest,
    RunsOut,
    errors,
    event_json,
    run_json,
)
from mlbench.server.states import RunState
from mlbench.server.stream import read_from

router = APIRouter(prefix="/api/runs", tags=["runs"])


@router.post(
    "",
    status_code=201,
    dependencies=[Admin],
    response_model=RunsOut,
    responses=errors(400, 401, 403, 413),
)
def create_runs(req: RunRequest, s: SessionDep, state: State) -> dict[str, Any]:
    """Queue one run per worker count (``workers_sweep``, else ``workers``) × ``repeats``, all
    with the same resolved config; nothing is queued unless every one of them is valid."""
    data_dir = state.scheduler.data_dir if state.scheduler else None
    return {"runs": [run_json(r) for r in services.create_runs(s, req, data_dir)]}


@router.post(
    "/import",
    dependencies=[Admin],
    response_model=RunOut,
    responses=errors(400, 401, 403, 409, 413),
)
def import_run(req: ImportRequest, s: SessionDep) -> dict[str, Any]:
    """Record a run that ran elsewhere (``mlbench import``); re-importing updates it."""
    return run_json(services.import_run(s, req))


@router.get("", dependencies=[Reader], response_model=RunsOut, responses=errors(401, 403))
def list_runs(
    s: SessionDep,
    state: RunState | None = None,
    task: str | None = Query(None, max_length=64, pattern=NAME),
    official: bool | None = None,
    sweep: str | None = Query(None, min_length=1, max_length=64, pattern=RUN_ID),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=2**53),
) -> dict[str, Any]:
    """Newest first; ``sweep``: only the runs of that sweep id."""
    q = select(Run)
    if state is not None:
        q = q.where(Run.state == state.value)
    if task is not None:
        q = q.where(Run.task == task)
    if official is not None:
        q = q.where(Run.official == official)
    if sweep is not None:
        q = q.where(Run.sweep_id == sweep)
    rows = s.scalars(q.order_by(Run.created_at.desc(), Run.id).limit(limit).offset(offset))
    return {"runs": [run_json(r) for r in rows]}


@router.get(
    "/{run_id}", dependencies=[Reader], response_model=RunOut, responses=errors(401, 403, 404)
)
def get_one(run_id: RunId, s: SessionDep) -> dict[str, Any]:
    return run_json(get_run(s, run_id))


@router.post(
    "/{run_id}/cancel",
    dependencies=[Admin],
    response_model=RunOut,
    responses=errors(401, 403, 404, 409, 413),
)
def cancel(run_id: RunId, s: SessionDep) -> dict[str, Any]:
    """A queued run never starts; a running one is stopped by the scheduler (409 if ended)."""
    run = get_run(s, run_id)
    services.cancel_run(s, run)
    return run_json(run)


@router.delete(
    "/{run_id}", status_code=204, dependencies=[Admin], responses=errors(401, 403, 404, 409, 413)
)
def delete_run(run_id: RunId, s: SessionDep) -> None:
    """The run and its events (409 while it may still be running)."""
    services.delete_run(s, get_run(s, run_id))


@router.get("/{run_id}/logs", dependencies=[Reader], responses=errors(401, 403, 404))
def logs(
    run_id: RunId,
    s: SessionDep,
    rank: int = Query(0, ge=0, le=100_000),
    stream: Literal["stdout", "stderr"] = "stdout",
    offset: int = Query(0, ge=0, le=2**53),
    limit: int = Query(65536, ge=1, le=1 << 20),
) -> LogsOut:
    """A rank's stdout/stderr from byte ``offset`` (poll with ``next_offset`` to follow)."""
    run_dir = run_files(get_run(s, run_id).executor_ref)
    if run_dir is None:
        raise HTTPException(404, detail=f"run {run_id} has no logs on this master")
    data = read_from(run_dir / f"rank-{rank}.{stream}", offset, limit)
    return LogsOut(text=data.decode("utf-8", "replace"), next_offset=offset + len(data))


@router.get(
    "/{run_id}/download",
    dependencies=[Reader],
    response_class=Response,
    responses={
        200: {"content": {"application/zip": {}}, "description": "a zip archive"},
        **errors(401, 403, 404),
    },
)
def download(run_id: RunId, s: SessionDep) -> Response:
    """Everything the run produced, as a zip: result.json, the config, per-rank events (from
    the database) and, when this master ran it, every file of its run directory."""
    run = get_run(s, run_id)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{run_id}/run.json", json.dumps(run_json(run), indent=2))
        if run.result is not None:
            zf.writestr(f"{run_id}/result.json", json.dumps(run.result, indent=2))
        ranks = s.scalars(select(Event.rank).where(Event.run_id == run_id).distinct())
        for rank in sorted(ranks):
            rows = s.scalars(
                select(Event).where(Event.run_id == run_id, Event.rank == rank).order_by(Event.seq)
            )
            lines = (json.dumps(event_json(e), separators=(",", ":")) for e in rows)
            zf.writestr(f"{run_id}/events/rank-{rank}.jsonl", "\n".join(lines) + "\n")
        run_dir = run_files(run.executor_ref)
        if run_dir is not None and run_dir.is_dir():
            for f in sorted(run_dir.iterdir()):
                # regular files only, never through a link: a symlink placed in a run
                # directory (by a plug-in, a user on the machine) must not export what it
                # points at, e.g. the master's database or keys
                if f.is_file() and not f.is_symlink():
                    zf.write(f, f"{run_id}/files/{f.name}")
    return Response(
        buf.getvalue(),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{run_id}.zip"'},
    )
