"""Real databases for the API tests: a SQLite file, and a throwaway PostgreSQL 15 cluster.

The PostgreSQL fixture runs initdb + pg_ctl as the ``postgres`` user (they refuse root) on a free
port, creates a fresh database per test, and removes the cluster at the end of the session.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from mlbench.server.db import make_engine

from ..support.pgcluster import PostgresUnavailable, create_database, throwaway_postgres
from .master import Master

PG_BIN = Path(os.environ.get("MLBENCH_PG_BIN", "/usr/lib/postgresql/15/bin"))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    try:
        with throwaway_postgres(fsync=False, pg_bin=PG_BIN) as url:
            yield url
    except PostgresUnavailable as exc:  # a missing PostgreSQL fails the suite, never skips it
        pytest.fail(f"{exc} (set MLBENCH_PG_BIN)")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A fresh, empty database of each kind, per test."""
    if request.param == "sqlite":
        eng = make_engine(f"sqlite:///{tmp_path / 'mlbench.db'}")
        yield eng
        eng.dispose()
        return
    server = request.getfixturevalue("postgres_server")
    name = "t_" + secrets.token_hex(6)
    eng = make_engine(create_database(server, name))
    yield eng
    eng.dispose()
    admin = create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
    admin.dispose()


@pytest.fixture
def scheduling_master(tmp_path: Path, real_data: Path) -> Iterator[Master]:
    """A master whose scheduler runs jobs: capacity 2 workers, the real datasets as data dir."""
    m = Master(tmp_path / "home", "--capacity-workers", "2", "--data-dir", str(real_data))
    m.start()
    yield m
    if m.proc and m.proc.poll() is None:
        m.proc.terminate()
        m.proc.wait(timeout=15)
