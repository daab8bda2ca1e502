"""Initial schema: runs and events.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("task", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.Column("workers", sa.Integer(), nullable=False),
        sa.Column("backend", sa.String(16), nullable=False),
        sa.Column("algorithm", sa.String(128), nullable=False),
        sa.Column("goal", sa.String(8), nullable=False),
        sa.Column("overrides", sa.JSON(), nullable=False),
        sa.Column("official", sa.Boolean()),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("result", sa.JSON()),
    )
    op.create_index("ix_runs_task", "runs", ["task"])
    op.create_index("ix_runs_state", "runs", ["state"])
    op.create_index("ix_runs_official", "runs", ["official"])
    op.create_table(
        "events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column(
            "run_id", sa.String(64), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("time", sa.Float(), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.Column("epoch", sa.Float(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.Float()),
        sa.Column("unit", sa.String(16)),
        sa.UniqueConstraint("run_id", "rank", "seq", name="uq_event_run_rank_seq"),
    )
    op.create_index("ix_events_series", "events", ["run_id", "kind", "name", "rank", "step"])


def downgrade() -> None:
    op.drop_table("events")
    op.drop_table("runs")
