"""``mlbench token create|list|revoke``: the master's API tokens.

Works on the master's database directly (same ``$MLBENCH_HOME`` / ``MLBENCH_DATABASE_URL``), so
the first token can be made before anyone can authenticate, and a leaked one can be revoked even
when no other admin token is at hand. The token is printed once; only its hash is stored, so a
listing shows ids and labels, never tokens.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI imports lazily: `mlbench --help` and `mlbench run` stay light
    from sqlalchemy.orm import Session


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("token", help="manage the master's API tokens")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="create an admin token (printed once)")
    create.add_argument("--name", default="admin", help="a label for the token")
    create.set_defaults(func=run_create)
    listing = actions.add_parser("list", help="list tokens (ids and labels; never the tokens)")
    listing.add_argument("--all", action="store_true", help="include the per-run upload tokens too")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=run_list)
    revoke = actions.add_parser("revoke", help="revoke tokens by id (see `token list`)")
    revoke.add_argument("ids", type=int, nargs="+", metavar="ID")
    revoke.set_defaults(func=run_revoke)


@contextmanager
def _session() -> Iterator[Session]:
    from mlbench.server import db

    engine = db.make_engine(db.database_url())
    db.upgrade(engine)
    try:
        with db.session_factory(engine)() as s:
            yield s
    finally:
        engine.dispose()


def run_create(args: argparse.Namespace) -> int:
    from mlbench.server.auth import create_token

    with _session() as s:
        token = create_token(s, args.name, "admin")
        s.commit()
    print(token)
    return 0


def run_list(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from mlbench.server.models import Token

    with _session() as s:
        q = select(Token).order_by(Token.id)
        if not args.all:
            q = q.where(Token.scope == "admin")
        rows = [
            {
                "id": t.id,
                "name": t.name,
                "scope": t.scope,
                "run_id": t.run_id,
                "created_at": t.created_at.isoformat() if t.created_at else None,
            }
            for t in s.scalars(q)
        ]
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("no tokens (create one with `mlbench token create`)")
    else:
        for r in rows:
            run = f"  run {r['run_id']}" if r["run_id"] else ""
            print(f"{r['id']:>5}  {r['scope']:<7} {r['name']:<24} {r['created_at']}{run}")
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    import sys

    from sqlalchemy import delete, select

    from mlbench.server.models import Token

    with _session() as s:
        known = set(s.scalars(select(Token.id).where(Token.id.in_(args.ids))))
        missing = sorted(set(args.ids) - known)
        if missing:
            print(
                f"mlbench: error: no token with id {missing} (see `mlbench token list`)",
                file=sys.stderr,
            )
            return 2
        s.execute(delete(Token).where(Token.id.in_(args.ids)))
        s.commit()
    print(f"revoked {len(known)} token(s): {sorted(known)}")
    return 0
