"""Token ids are never reused (SQLite ``AUTOINCREMENT``).

Why: a SQLite ``INTEGER PRIMARY KEY`` without ``AUTOINCREMENT`` hands out max(id) + 1, so after
the newest token is revoked (deleted) the next one gets its id — and ``mlbench token revoke ID``
typed from an old listing revokes the newer token. With ``AUTOINCREMENT`` SQLite keeps the
highest id ever used (``sqlite_sequence``) and never goes below it. PostgreSQL's sequences never
reuse ids already; nothing changes there.

SQLite can only add ``AUTOINCREMENT`` by rebuilding the table (Alembic's batch mode copies it);
nothing references ``tokens``, so the copy cascades nothing. Ids of tokens deleted before this
migration above today's highest cannot be known and may be handed out once more.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table(
        "tokens", recreate="always", table_kwargs={"sqlite_autoincrement": True}
    ):
        pass


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table(
        "tokens", recreate="always", table_kwargs={"sqlite_autoincrement": False}
    ):
        pass
