"""Database schema (SQLAlchemy 2). Values are numbers, never text (the original's flaw).

Events are unique by (run_id, rank, seq): that key is what makes ingest idempotent, so retries and
replays from a worker's JSONL file can never duplicate a record.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from mlbench.server.states import RUN_STATES, TERMINAL_STATES

__all__ = ["RUN_STATES", "TERMINAL_STATES", "Base", "Event", "Run", "Token"]


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[str]: JSON}


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    task: Mapped[str] = mapped_column(String(64), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    workers: Mapped[int] = mapped_column(Integer)
    backend: Mapped[str] = mapped_column(String(16))
    algorithm: Mapped[str] = mapped_column(String(128))
    goal: Mapped[str] = mapped_column(String(8))
    overrides: Mapped[list[str]] = mapped_column(JSON)
    official: Mapped[bool | None] = mapped_column(index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # the resolved config (``mlbench.config.to_dict``) fixed at submission: what the executor
    # runs, whatever the task defaults are by the time the run is admitted (None: submitted
    # before migration 0004; the scheduler resolves it from the columns above then)
    config: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    # what the executor that launched the run needs to find it again (after a master restart
    # too): opaque to the scheduler, meaningful only to that executor (server/executor.py)
    executor_ref: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    # the executor may still hold the run (its launcher may be alive): the scheduler watches
    # it, counts its workers against capacity, and it cannot be deleted
    active: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # how the run's event upload ended (``UploadOut``: complete, uploaded, quarantined,
    # pending, reason, stored), as its launcher or ``mlbench import`` reported it and this
    # master checked it; None until someone reports (migration 0006)
    upload: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    # the sweep this run belongs to (``mlbench sweep --master``), so a sweep's runs are found
    # with ``GET /api/runs?sweep=ID``; None for a run submitted alone (migration 0007)
    sweep_id: Mapped[str | None] = mapped_column(String(64), index=True)


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("run_id", "rank", "seq", name="uq_event_run_rank_seq"),
        # time series per metric/rank: WHERE run_id, kind, name [, rank] ORDER BY step
        Index("ix_events_series", "run_id", "kind", "name", "rank", "step"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    # on SQLite; PostgreSQL drops it (migration 0008) and the ingest locks the run per batch
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    rank: Mapped[int] = mapped_column(Integer)
    seq: Mapped[int] = mapped_column(BigInteger)
    time: Mapped[float] = mapped_column(Float)
    step: Mapped[int] = mapped_column(BigInteger)
    epoch: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(64))
    value: Mapped[float | None] = mapped_column(Float)
    unit: Mapped[str | None] = mapped_column(String(16))


class Token(Base):
    """A bearer token. ``scope`` is ``admin`` (every write) or ``upload`` (events of ``run_id``).
    Only the SHA-256 of the token is stored; the token itself is shown once, at creation."""

    __tablename__ = "tokens"
    # ids are never reused, so a revoke by id from an old listing cannot hit a newer token
    # (SQLite: AUTOINCREMENT, migration 0005; PostgreSQL's sequences never reuse)
    __table_args__ = {"sqlite_autoincrement": True}  # noqa: RUF012 (SQLAlchemy reads it)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[str] = mapped_column(String(16))
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
