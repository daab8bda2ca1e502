"""A throwaway PostgreSQL cluster: initdb into a temporary directory, start it on a free port,
remove everything on exit.

The API tests (``tests/server``) and the ingest benchmark (``benchmarks/ingest.py``) both need a
real PostgreSQL server that nobody has to install or configure, so the start/stop logic lives
here once instead of in each of them. It is test infrastructure, so it lives in ``tests/support``
rather than in the installed package (which never starts a database of its own); the server
binaries come from the system (``.ci/system-deps`` installs ``postgresql-15`` when missing).

``initdb`` and ``postgres`` refuse to run as root, so when we are root every server command runs
as the ``postgres`` user (``runuser -u postgres --``). The server listens on 127.0.0.1 only and
puts its Unix socket in its own data directory.

Tests pass ``fsync=False`` (durability does not matter for a cluster that is deleted afterwards,
and it is faster); a benchmark keeps the PostgreSQL defaults (``fsync=True``) so that it measures
what a production master would see.

    with throwaway_postgres() as server:      # "postgresql+psycopg://postgres@127.0.0.1:PORT"
        url = create_database(server, "bench")
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlbench.errors import MlbenchError
from mlbench.launch.local import free_port

PG_BIN = Path(os.environ.get("MLBENCH_PG_BIN", "/usr/lib/postgresql/15/bin"))
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresUnavailable(MlbenchError):
    """The PostgreSQL server binaries are not where we look for them."""


def _as_postgres(args: list[str], timeout: float = 120, check: bool = True) -> None:
    cmd = ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args
    subprocess.run(cmd, check=check, capture_output=True, timeout=timeout)


@contextmanager
def throwaway_postgres(
    *, fsync: bool = True, pg_bin: Path | None = None, settings: dict[str, str] | None = None
) -> Iterator[str]:
    """Start a fresh cluster (trust authentication, user ``postgres``) and yield its server URL,
    ``postgresql+psycopg://postgres@127.0.0.1:PORT`` (append ``/DBNAME``). ``settings`` are extra
    ``-c name=value`` server options. The cluster is stopped (immediate mode) and its directory
    removed on exit, also on error."""
    pg_bin = pg_bin or PG_BIN
    if not (pg_bin / "initdb").exists():
        raise PostgresUnavailable(f"PostgreSQL binaries not found in {pg_bin} (set MLBENCH_PG_BIN)")
    data = Path(tempfile.mkdtemp(prefix="mlbench-pg-"))
    started = False
    try:
        if os.geteuid() == 0:
            shutil.chown(data, "postgres", "postgres")
        _as_postgres([str(pg_bin / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"])
        port = free_port()
        options = [f"-p {port}", f"-k {data}", "-c listen_addresses=127.0.0.1"]
        if not fsync:
            options.append("-c fsync=off")
        options += [f"-c {k}={v}" for k, v in (settings or {}).items()]
        started = True  # from here on, stop it on the way out (pg_ctl start may time out)
        _as_postgres(
            [
                str(pg_bin / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(data / "log"),
                "-o",
                " ".join(options),
                "-w",
                "start",
            ]
        )
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        if started:
            stop = [str(pg_bin / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
            _as_postgres(stop, check=False)
        shutil.rmtree(data, ignore_errors=True)


def create_database(server: str, name: str) -> str:
    """``CREATE DATABASE name`` on ``server`` (a URL from :func:`throwaway_postgres`); returns
    the new database's URL."""
    from sqlalchemy import create_engine, text

    if not _NAME.match(name):
        raise ValueError(f"not a plain database name: {name!r}")
    admin = create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
    finally:
        admin.dispose()
    return f"{server}/{name}"
