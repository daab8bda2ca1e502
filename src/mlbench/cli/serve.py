"""``mlbench serve``: the master (REST API + database) under uvicorn."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="start the master: REST API and results database",
        description="Start the master. Database: a SQLite file under $MLBENCH_HOME, or "
        "PostgreSQL when MLBENCH_DATABASE_URL is set (postgresql://user@host:port/db). "
        "Migrations run on start. API docs at /docs, schema at /openapi.json.",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from mlbench.server.app import create_app
    from mlbench.server.db import database_url, make_engine

    url = database_url()
    app = create_app(make_engine(url))
    print(f"mlbench master on http://{args.host}:{args.port} (database: {url.split('@')[-1]})")
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
