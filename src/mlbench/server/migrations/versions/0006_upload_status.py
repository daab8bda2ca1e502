"""Runs record how their event upload ended (``runs.upload``, JSON, NULL until reported).

Why: a record the master refused used to stop its rank's upload; the run still showed
``finished`` with most of its events missing, and nothing said so. The uploader now quarantines
refused records and reports ``{complete, uploaded, quarantined, pending, reason}``; the master
keeps that report here, checked against the events it holds, and ``RunOut.upload`` and the
dashboard show it. Existing rows stay NULL: nobody reported their uploads.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("upload", sa.JSON()))


def downgrade() -> None:
    op.drop_column("runs", "upload")
