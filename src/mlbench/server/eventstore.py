"""The two hot paths over the events table: batched idempotent insert, and series sampling.

Why not the ORM / one generic statement (measured by benchmarks/ingest.py, 1,000 events):

* **Insert.** ``insert(Event).values(rows)`` builds and compiles a new statement with 10 bind
  parameters per row for every request: ~180 ms of SQLAlchemy work per batch, while the database
  runs the SQL in ~5 ms — and 10 columns × 6,554 rows passes PostgreSQL's 65,535-parameter limit
  (a 500 on a legal 10,000-event batch). Now:

  - PostgreSQL: the rows go in by binary ``COPY`` into a per-connection temporary staging table
    (``events_in``, no indexes, emptied at every commit), then one ``INSERT … SELECT FROM
    events_in ON CONFLICT DO NOTHING`` moves what is new, with an exact row count. COPY cannot
    skip conflicts itself, hence the staging table. Why not the previous single ``INSERT …
    SELECT FROM unnest(array, …)``: psycopg adapting the ten 1,000-element Python lists into
    array parameters cost the master ~6.5 ms of CPU per 1,000 events, against ~1.4 ms for
    psycopg's C ``COPY`` writer, with the same server-side work (benchmarks/RESULTS.md,
    "Master under load"). No parameter limit either way;
  - SQLite: a plain ``INSERT … ON CONFLICT DO NOTHING`` handed to the driver's executemany with
    the rows as tuples (SQLAlchemy's compiled-insert path with ``RETURNING`` spent more time per
    row in Python than SQLite spends storing it); the driver's summed rowcount is the new rows.

* **Series.** "every k-th row of the metric" needs the row count and a row number per row, i.e. a
  scan of every point (1.7–2.5 s for a 1,000,000-point metric). Now each rank's series is read
  with index seeks on ``(run_id, kind, name, rank, step)``: when the rank has ≤ max_points
  points they are all returned (one range read); otherwise ``max_points`` evenly spaced steps
  between the first and the last are looked up (first row at or after each), so the cost grows
  with ``max_points``, not with the run's length. Sampling is thus even in *steps*, which is
  what a chart's x-axis needs; the last point is always included.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

if TYPE_CHECKING:
    import psycopg

COLUMNS = ("run_id", "rank", "seq", "time", "step", "epoch", "kind", "name", "value", "unit")
#: COLUMNS' types, for the staging table and the binary COPY
_PG_TYPES = [
    "varchar",
    "int4",
    "int8",
    "float8",
    "int8",
    "float8",
    "varchar",
    "varchar",
    "float8",
    "varchar",
]
#: the staging table: temporary (this connection's own, never logged), emptied at every commit
_PG_STAGE = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS events_in ("
    + ", ".join(f"{c} {t}" for c, t in zip(COLUMNS, _PG_TYPES, strict=True))
    + ") ON COMMIT DELETE ROWS"
)
_PG_COPY = f"COPY events_in ({', '.join(COLUMNS)}) FROM STDIN (FORMAT BINARY)"
_PG_LOCK_RUN = "SELECT 1 FROM runs WHERE id = %s FOR KEY SHARE"
_PG_MOVE = (
    f"INSERT INTO events ({', '.join(COLUMNS)}) SELECT {', '.join(COLUMNS)} FROM events_in "
    "ON CONFLICT (run_id, rank, seq) DO NOTHING"
)
_SQLITE_INSERT = (
    f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
    "ON CONFLICT (run_id, rank, seq) DO NOTHING"
)


_SQLITE_WRITER = threading.Lock()


def insert_events(s: Session, engine: Engine, rows: Sequence[tuple[Any, ...]]) -> int:
    """Insert what is new of ``rows`` (tuples in COLUMNS order, all of one run) and commit;
    returns how many were new. Raises RunGone if the run was deleted meanwhile.

    SQLite has one writer at a time, and a writer that finds the file locked waits in SQLite's
    busy handler, which sleeps with back-off up to 100 ms between looks: under 32 uploaders
    some requests lost every race for seconds (p99 2.9 s, max 8 s). The master's own ingest
    writers therefore queue on a lock, taken before the first write and released after the
    commit, so the next one starts the moment the file is free.
    """
    if not rows:
        return 0
    with _SQLITE_WRITER if engine.dialect.name == "sqlite" else nullcontext():
        inserted = _insert(s, engine, rows)
        s.commit()
    return inserted


def _insert(s: Session, engine: Engine, rows: Sequence[tuple[Any, ...]]) -> int:
    if engine.dialect.name == "postgresql":
        return _pg_copy_insert(s, rows)
    # the driver's own executemany: sqlite3 sums the rows each execution changed, and a row
    # skipped by ON CONFLICT DO NOTHING changes none, so rowcount is exactly the new rows
    result = s.connection().exec_driver_sql(_SQLITE_INSERT, list(rows))
    return int(result.rowcount)


def prepare_postgres(dbapi: Any) -> None:
    """Create this connection's staging table (``make_engine`` calls it for every new
    PostgreSQL connection): once per connection, not a statement per batch. It is committed at
    once, so a later rollback cannot take it away."""
    with dbapi.cursor() as cur:
        cur.execute(_PG_STAGE)
    dbapi.commit()


class RunGone(LookupError):
    """The run was deleted while its events were being ingested."""


def _pg_copy_insert(s: Session, rows: Sequence[tuple[Any, ...]]) -> int:
    """COPY ``rows`` (all of one run) into the staging table, move the new ones into events;
    runs in the session's transaction (the caller commits, which also empties the staging
    table).

    The events table has no foreign key on PostgreSQL (migration 0008: its per-row trigger was
    half the insert's time), so the run is locked here once, as the trigger did per row: a
    concurrent delete waits for this commit, or has already removed the run (RunGone)."""
    run_id = rows[0][0]
    assert all(r[0] == run_id for r in rows), "one batch holds one run's events"
    dbapi = cast("psycopg.Connection[Any]", s.connection().connection.dbapi_connection)
    with dbapi.cursor() as cur:
        cur.execute(_PG_LOCK_RUN, (run_id,))
        if cur.fetchone() is None:
            raise RunGone(run_id)
        with cur.copy(_PG_COPY) as copy:
            copy.set_types(_PG_TYPES)
            for row in rows:
                copy.write_row(row)
        cur.execute(_PG_MOVE)
        return int(cur.rowcount)


_POINT = "SELECT step, epoch, time, value, seq FROM events"
_WHERE = "WHERE run_id = :run AND kind = :kind AND name = :name AND rank = :rank"
_HEAD = text(f"{_POINT} {_WHERE} ORDER BY step LIMIT :n")
_LAST = text(f"{_POINT} {_WHERE} ORDER BY step DESC LIMIT 1")
_AT = text(f"{_POINT} {_WHERE} AND step >= :at ORDER BY step LIMIT 1")
_PG_SEEKS = text(
    "SELECT e.step, e.epoch, e.time, e.value, e.seq FROM generate_series(0, :slots - 1) AS g(i) "
    "CROSS JOIN LATERAL (SELECT step, epoch, time, value, seq FROM events "
    f"{_WHERE} AND step >= CAST(:lo AS bigint) "
    "+ CAST(:span AS bigint) * g.i / CAST(:slots AS bigint) "
    "ORDER BY step LIMIT 1) AS e ORDER BY g.i"
)
_SINCE = text(f"{_POINT} {_WHERE} AND time > :since ORDER BY step, seq")


def series_points(
    s: Session,
    run_id: str,
    kind: str,
    name: str,
    rank: int,
    max_points: int,
    since: float | None = None,
) -> list[list[Any]]:
    """One rank's points ``[step, epoch, time, value]``, ≤ max_points + 1 (the last point is
    always there), sampled evenly in steps (see the module docstring)."""
    key = {"run": run_id, "kind": kind, "name": name, "rank": rank}
    if since is not None:  # a live chart's increment: usually few rows; thinned by row count
        rows = s.execute(_SINCE, {**key, "since": since}).all()
        stride = max(1, -(-len(rows) // max_points))
        picked = list(rows[::stride])
        if rows and picked[-1] is not rows[-1]:
            picked.append(rows[-1])
        return [[r.step, r.epoch, r.time, r.value] for r in picked]
    head = s.execute(_HEAD, {**key, "n": max_points + 1}).all()
    if len(head) <= max_points:
        return [[r.step, r.epoch, r.time, r.value] for r in head]
    last = s.execute(_LAST, key).one()
    lo, hi = head[0].step, last.step
    slots = max_points - 1
    found: Sequence[Any]
    if s.get_bind().dialect.name == "postgresql":
        # all seeks in one statement (a LATERAL join over the slot numbers): one round trip
        found = s.execute(_PG_SEEKS, {**key, "lo": lo, "span": hi - lo, "slots": slots}).all()
    else:  # SQLite runs in-process: a seek per slot costs microseconds, no round trips
        found = [
            s.execute(_AT, {**key, "at": lo + (hi - lo) * i // slots}).first() for i in range(slots)
        ]
    out: list[list[Any]] = []
    seen: set[int] = {last.seq}
    for row in found:
        if row is not None and row.seq not in seen:
            seen.add(row.seq)
            out.append([row.step, row.epoch, row.time, row.value])
    out.append([last.step, last.epoch, last.time, last.value])
    return out
