"""The live stream of a run (Server-Sent Events): new events, new log lines, state changes.

Why a per-rank cursor and not the events' database ids: ids are handed out when a row is
inserted, but on PostgreSQL transactions commit in any order, so "id > last seen" can skip a row
whose lower id committed late. Each rank's events are uploaded in ``seq`` order by one uploader,
so "seq > last seen, per rank" never skips and maps onto the (run, rank, seq) unique index.

The cursor is sent as every message's SSE ``id``; a browser's ``EventSource`` sends it back as
``Last-Event-ID`` when it reconnects, so a dropped connection resumes where it stopped instead of
replaying the run or losing lines. Format: ``SEQS_OUTS_ERRS``, each a ``.``-joined list with one
entry per rank (``-1`` = nothing seen yet; byte offsets for stdout/stderr).
"""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from mlbench.server.executor import run_files
from mlbench.server.models import Event, Run
from mlbench.server.states import TERMINAL_STATES

MAX_EVENTS = 2000  # per message; a backlog is sent as several messages without waiting
MAX_LOG_BYTES = 64 * 1024  # per message and rank/stream


class CursorError(ValueError):
    pass


@dataclass
class Cursor:
    seqs: list[int]
    outs: list[int]
    errs: list[int]

    @classmethod
    def start(cls, world: int) -> Cursor:
        return cls([-1] * world, [0] * world, [0] * world)

    @classmethod
    def parse(cls, text: str, world: int) -> Cursor:
        try:
            parts = [[int(x) for x in p.split(".")] for p in text.split("_")]
        except ValueError:
            raise CursorError(f"malformed cursor {text[:64]!r}") from None
        if len(parts) != 3 or any(len(p) != world for p in parts):
            raise CursorError(f"cursor {text[:64]!r} does not fit a run of {world} ranks")
        if any(x < -1 for x in parts[0]) or any(x < 0 for p in parts[1:] for x in p):
            raise CursorError(f"cursor {text[:64]!r} has negative positions")
        if any(x > 2**62 for p in parts for x in p):
            raise CursorError(f"cursor {text[:64]!r} has positions beyond 2**62")
        return cls(*parts)

    def __str__(self) -> str:
        return "_".join(".".join(map(str, p)) for p in (self.seqs, self.outs, self.errs))


def read_from(path: Path, offset: int, limit: int) -> bytes:
    """Up to ``limit`` bytes of a file from ``offset``; nothing past its end or if it is absent
    (a client's offset can be anything, and seeking past the largest file size is an OSError)."""
    try:
        with open(path, "rb") as fh:
            if offset >= os.fstat(fh.fileno()).st_size:
                return b""
            fh.seek(offset)
            return fh.read(limit)
    except FileNotFoundError:
        return b""


def _log_chunk(path: Path, offset: int, final: bool) -> tuple[str, int]:
    """New text of a log file from ``offset``: whole lines only while the run is live (so a line
    is never shown split), everything once it has ended. Returns (text, new offset)."""
    data = read_from(path, offset, MAX_LOG_BYTES)
    if not final and len(data) < MAX_LOG_BYTES:
        data = data[: data.rfind(b"\n") + 1]
    # never cut a UTF-8 character in two: back off to its first byte (continuations are 10xxxxxx)
    if len(data) == MAX_LOG_BYTES:
        end = len(data)
        while end > len(data) - 4 and end > 0 and data[end - 1] & 0xC0 == 0x80:
            end -= 1
        if end > 0 and data[end - 1] >= 0xC0:
            end -= 1
        data = data[:end] if end > 0 else data
    return data.decode("utf-8", "replace"), offset + len(data)


class RunStream:
    """One client's stream. ``poll`` does the database and file work (in a worker thread);
    ``messages`` paces it and turns it into (event name, data, cursor) triples."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        run_id: str,
        cursor: Cursor,
        *,
        kinds: list[str] | None,
        logs: bool,
        events: bool = True,
        run_json: Callable[[Run], dict[str, Any]],
        event_json: Callable[[Event], dict[str, Any]],
    ) -> None:
        self.sessions, self.run_id, self.cursor = sessions, run_id, cursor
        self.kinds, self.logs, self.events = kinds, logs, events
        self.run_json, self.event_json = run_json, event_json

    @staticmethod
    def now_cursor(sessions: sessionmaker[Session], run: Run, world: int) -> Cursor:
        """A cursor at the present: only what arrives from now on is streamed."""
        cur = Cursor.start(world)
        with sessions() as s:
            for rank in range(world):
                top = s.scalar(
                    select(func.max(Event.seq)).where(Event.run_id == run.id, Event.rank == rank)
                )
                cur.seqs[rank] = -1 if top is None else int(top)
        run_dir = run_files(run.executor_ref)
        if run_dir is not None:
            for rank in range(world):
                for stream, offsets in (("stdout", cur.outs), ("stderr", cur.errs)):
                    path = run_dir / f"rank-{rank}.{stream}"
                    offsets[rank] = path.stat().st_size if path.exists() else 0
        return cur

    def poll(self, final: bool) -> tuple[dict[str, Any] | None, list[tuple[str, Any, str]], bool]:
        """(run or None if deleted, messages with the cursor just past each, more-is-waiting)."""
        out: list[tuple[str, Any, str]] = []
        more = False
        with self.sessions() as s:
            run = s.get(Run, self.run_id)
            if run is None:
                return None, out, False
            for rank, last in enumerate(self.cursor.seqs if self.events else []):
                q = select(Event).where(
                    Event.run_id == self.run_id, Event.rank == rank, Event.seq > last
                )
                if self.kinds:
                    q = q.where(Event.kind.in_(self.kinds))
                rows = list(s.scalars(q.order_by(Event.seq).limit(MAX_EVENTS)))
                if rows:
                    self.cursor.seqs[rank] = rows[-1].seq
                    data = {"rank": rank, "events": [self.event_json(e) for e in rows]}
                    out.append(("events", data, str(self.cursor)))
                    more = more or len(rows) == MAX_EVENTS
            run_json = self.run_json(run)
            run_dir = run_files(run.executor_ref)
        if self.logs and run_dir is not None:
            for rank in range(len(self.cursor.seqs)):
                for stream, offsets in (("stdout", self.cursor.outs), ("stderr", self.cursor.errs)):
                    path = run_dir / f"rank-{rank}.{stream}"
                    start = offsets[rank]
                    text, offsets[rank] = _log_chunk(path, start, final)
                    if text:
                        data = {"rank": rank, "stream": stream, "offset": start, "text": text}
                        out.append(("log", data, str(self.cursor)))
                        more = more or offsets[rank] - start == MAX_LOG_BYTES
        return run_json, out, more

    async def messages(
        self, interval: float, stopping: threading.Event | None = None
    ) -> AsyncIterator[tuple[str, Any, str]]:
        """State first, then whatever is new every ``interval`` seconds; once the run has ended
        and everything it produced was sent, an ``end`` message, and the stream closes. When
        ``stopping`` is set (the master shuts down) the stream closes without ``end``: a client
        reconnects with its last id and misses nothing."""
        last_state = None
        while stopping is None or not stopping.is_set():
            before = str(self.cursor)
            run, msgs, more = await anyio.to_thread.run_sync(self.poll, False)
            if run is None:
                yield "end", {"state": "deleted"}, str(self.cursor)
                return
            terminal = run["state"] in TERMINAL_STATES
            if terminal and not more:
                # the launcher's last upload precedes its exit; drain once more, logs whole
                run2, tail, more = await anyio.to_thread.run_sync(self.poll, True)
                msgs += tail
                run = run2 or run
            if run["state"] != last_state:
                last_state = run["state"]
                yield "state", run, before
            for msg in msgs:
                yield msg
            if terminal and not more:
                yield "end", {"state": run["state"]}, str(self.cursor)
                return
            if not more:
                await anyio.sleep(interval)
