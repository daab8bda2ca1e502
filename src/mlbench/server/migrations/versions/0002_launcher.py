"""Runs remember where they run: run directory and launcher process (for reconciliation).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("run_dir", sa.Text()))
        batch.add_column(sa.Column("pid", sa.Integer()))
        batch.add_column(sa.Column("pid_started", sa.Float()))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("pid_started")
        batch.drop_column("pid")
        batch.drop_column("run_dir")
