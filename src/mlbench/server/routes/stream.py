"""A run's live stream (Server-Sent Events); the cursor logic is ``mlbench.server.stream``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query
from fastapi.sse import EventSourceResponse, ServerSentEvent

from mlbench.server.deps import Reader, RunId, SessionDep, State, get_run
from mlbench.server.schemas import errors, event_json, run_json
from mlbench.server.services import FieldError
from mlbench.server.stream import Cursor, CursorError, RunStream
from mlbench.vocab import EVENT_KINDS

router = APIRouter(prefix="/api/runs/{run_id}", tags=["stream"])
#: A cursor is three numbers per rank; 8,192 characters hold ~300 ranks' worth. The HTTP layer
#: (h11) refuses a request line or headers past 16 KiB anyway, so a longer limit here would
#: promise what the server cannot receive; a stream of a larger run resumes from the start.
MAX_CURSOR = 8192


def stream_source(
    run_id: RunId,
    s: SessionDep,
    state: State,
    kind: Annotated[
        list[str] | None, Query(max_length=len(EVENT_KINDS), description="only these kinds")
    ] = None,
    logs: bool = Query(True, description="also stream stdout/stderr lines"),
    events: bool = Query(True, description="stream events (false: state and logs only)"),
    from_now: bool = Query(False, description="skip what the run produced so far"),
    cursor: str | None = Query(None, max_length=MAX_CURSOR, description="resume here"),
    last_event_id: str | None = Header(None, max_length=MAX_CURSOR),
) -> RunStream:
    """Everything is checked here, before the response starts: a bad request is a 4xx, not a
    stream that ends at once. The session closes when this returns (the stream opens its own
    per poll), so a long-lived stream never holds a pooled connection."""
    run = get_run(s, run_id)
    for k in kind or []:
        if k not in EVENT_KINDS:
            raise FieldError("kind", f"unknown kind {k[:64]!r}", where="query")
    position = last_event_id or cursor  # a reconnecting EventSource sends the header
    try:
        if position:
            start = Cursor.parse(position, run.workers)
        elif from_now:
            start = RunStream.now_cursor(state.sessions, run, run.workers)
        else:
            start = Cursor.start(run.workers)
    except CursorError as exc:
        where, field = ("header", "last-event-id") if last_event_id else ("query", "cursor")
        raise FieldError(field, str(exc), where=where) from None
    return RunStream(
        state.sessions,
        run_id,
        start,
        kinds=kind,
        logs=logs,
        events=events,
        run_json=run_json,
        event_json=event_json,
    )


@router.get(
    "/stream",
    response_class=EventSourceResponse,
    dependencies=[Reader],
    responses=errors(401, 403, 404, json_beside=True),
)
async def stream(
    source: Annotated[RunStream, Depends(stream_source)],
    state: State,
) -> AsyncIterator[ServerSentEvent]:
    """Server-Sent Events: ``state`` (the run, first and on every change), ``events`` (new
    events of one rank, in seq order), ``log`` (new stdout/stderr text of one rank) and a last
    ``end`` once the run has ended and everything it produced was sent. Each message's id is a
    cursor; reconnecting with it as ``Last-Event-ID`` (browsers do) or ``?cursor=`` resumes
    without gaps or repeats."""
    async for name, data, position in source.messages(state.stream_interval, state.stopping):
        yield ServerSentEvent(event=name, data=data, id=position)
