"""Engine, sessions and schema migrations.

The database is a SQLite file under ``$MLBENCH_HOME`` by default (embedded, zero setup) and
PostgreSQL when ``MLBENCH_DATABASE_URL`` points to one. Alembic migrations run on every start, so
a master upgraded in place keeps its runs.
"""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from mlbench.runs import mlbench_home

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def database_url() -> str:
    url = os.environ.get("MLBENCH_DATABASE_URL")
    if url:
        return url
    home = mlbench_home()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'mlbench.db'}"


def make_engine(url: str) -> Engine:
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    # SQLite: one writer at a time; a writer that finds the file locked waits up to 30 s for
    # its turn instead of failing the request ("database is locked" under 32 uploaders)
    args = {"timeout": 30} if url.startswith("sqlite") else {}
    engine = create_engine(url, pool_pre_ping=True, connect_args=args)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(conn, _record):
            cur = conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")  # ON DELETE CASCADE for events
            cur.execute("PRAGMA journal_mode=WAL")  # readers don't block the ingest writer
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

    if engine.dialect.name == "postgresql":
        from mlbench.server.eventstore import prepare_postgres

        # the ingest's staging table (mlbench.server.eventstore), one per connection
        event.listen(engine, "connect", lambda conn, _record: prepare_postgres(conn))
    return engine


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision``, the newest migration by default (idempotent). An older
    revision is for tests that build a database as an earlier release left it."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Take the schema back to ``revision`` (each migration's ``downgrade``)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
