"""PostgreSQL: the events table's foreign key to runs is dropped; the ingest checks the run once
per batch instead of once per row.

Why: PostgreSQL checks a foreign key with a trigger per inserted row (a ``SELECT … FOR KEY
SHARE`` on ``runs``). ``EXPLAIN ANALYZE`` of a 1,000-event ingest put that trigger at 6.5 ms
of the statement's 11.6 ms, more than inserting the rows and maintaining three indexes
(benchmarks/RESULTS.md, "Master under load"). The ingest now takes the same lock on the run
row once per batch (``mlbench.server.eventstore``), and deleting a run locks its row before it
deletes the events (``services.delete_run``), so no event can outlive its run: an ingest that
holds the lock makes the delete wait for its commit, and one that comes after the delete finds
no run. The ``ON DELETE CASCADE`` was never relied on: the delete removes the events itself.

SQLite keeps its foreign key: its check is an in-process index lookup, and dropping a
constraint there means copying the table.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

FK = "events_run_id_fkey"  # PostgreSQL's name for 0001's unnamed constraint


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint(FK, "events", type_="foreignkey")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # events of runs deleted in between would block the constraint: they are orphans
        op.execute("DELETE FROM events WHERE run_id NOT IN (SELECT id FROM runs)")
        op.create_foreign_key(FK, "events", "runs", ["run_id"], ["id"], ondelete="CASCADE")
