"""Runs store their resolved config and an opaque executor reference, not a pid + run dir.

Why: the scheduler rebuilt a launcher command line from the run's columns at admission (so a
queued run ran whatever the task defaults were by then), and it knew that an executor means a
local process (pid, start time, run directory). Now the config is fixed at submission
(``runs.config``) and the executor's own bookkeeping is one JSON value only it reads
(``runs.executor_ref``); ``runs.active`` says the executor may still hold the run (was:
``pid IS NOT NULL``).

Existing rows: ``run_dir``/``pid``/``pid_started`` become a local executor reference
``{"kind": "local", "run_id", "pid", "started", "run_dir"}`` (a running run is found again
after the upgrade), ``active`` is ``pid IS NOT NULL``, and the three columns are dropped.
``config`` stays NULL for them: a migration cannot resolve configs without importing today's
task code; the scheduler resolves a pre-0004 queued run from its columns when it admits it.

SQLite: the columns are dropped with ``ALTER TABLE … DROP COLUMN`` (SQLite ≥ 3.35), not a batch
table copy: copying ``runs`` means dropping it, and with foreign keys on that would cascade-delete
every event.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_runs = sa.table(
    "runs",
    sa.column("id", sa.String),
    sa.column("run_dir", sa.Text),
    sa.column("pid", sa.Integer),
    sa.column("pid_started", sa.Float),
    sa.column("executor_ref", sa.JSON),
    sa.column("active", sa.Boolean),
)


def upgrade() -> None:
    op.add_column("runs", sa.Column("config", sa.JSON()))
    op.add_column("runs", sa.Column("executor_ref", sa.JSON()))
    op.add_column(
        "runs", sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(_runs.c.id, _runs.c.run_dir, _runs.c.pid, _runs.c.pid_started).where(
            sa.or_(_runs.c.run_dir.is_not(None), _runs.c.pid.is_not(None))
        )
    ).all()
    for run_id, run_dir, pid, started in rows:
        ref = {"kind": "local", "run_id": run_id, "pid": pid, "started": started}
        ref["run_dir"] = run_dir
        conn.execute(
            _runs.update()
            .where(_runs.c.id == run_id)
            .values(executor_ref=ref, active=pid is not None)
        )
    op.drop_column("runs", "pid_started")
    op.drop_column("runs", "pid")
    op.drop_column("runs", "run_dir")


def downgrade() -> None:
    op.add_column("runs", sa.Column("run_dir", sa.Text()))
    op.add_column("runs", sa.Column("pid", sa.Integer()))
    op.add_column("runs", sa.Column("pid_started", sa.Float()))
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(_runs.c.id, _runs.c.executor_ref, _runs.c.active).where(
            _runs.c.executor_ref.is_not(None)
        )
    ).all()
    for run_id, ref, active in rows:
        if not isinstance(ref, dict) or ref.get("kind") != "local":
            continue  # another executor's run: 0003 has no way to name it
        conn.execute(
            _runs.update()
            .where(_runs.c.id == run_id)
            .values(
                run_dir=ref.get("run_dir"),
                pid=ref.get("pid") if active else None,
                pid_started=ref.get("started") if active else None,
            )
        )
    op.drop_column("runs", "active")
    op.drop_column("runs", "executor_ref")
    op.drop_column("runs", "config")
