"""Runs record the sweep they belong to (``runs.sweep_id``, indexed, NULL for a lone run).

Why: ``mlbench sweep --master`` submits every point of a sweep as a run; the master keeps which
sweep each run belongs to so ``GET /api/runs?sweep=ID`` lists them (the CLI follows a sweep that
way, and a report can be built from the master's runs). Existing rows stay NULL: they were
submitted alone.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("sweep_id", sa.String(64)))
    op.create_index("ix_runs_sweep_id", "runs", ["sweep_id"])


def downgrade() -> None:
    op.drop_index("ix_runs_sweep_id", table_name="runs")
    op.drop_column("runs", "sweep_id")
