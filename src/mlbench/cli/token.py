"""``mlbench token create``: an admin bearer token for the master's write endpoints.

Works on the master's database directly (same ``$MLBENCH_HOME`` / ``MLBENCH_DATABASE_URL``), so
the first token can be made before anyone can authenticate. The token is printed once; only its
hash is stored.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("token", help="manage the master's API tokens")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="create an admin token (printed once)")
    create.add_argument("--name", default="admin", help="a label for the token")
    create.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mlbench.server import db
    from mlbench.server.auth import create_token

    engine = db.make_engine(db.database_url())
    db.upgrade(engine)
    with db.session_factory(engine)() as s:
        token = create_token(s, args.name, "admin")
        s.commit()
    engine.dispose()
    print(token)
    return 0
