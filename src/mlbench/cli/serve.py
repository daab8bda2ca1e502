"""``mlbench serve``: the master (REST API + database) under uvicorn."""

from __future__ import annotations

import argparse
import os


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
    p.add_argument(
        "--capacity-workers",
        type=int,
        default=None,
        help="worker processes the scheduler may run at once (default: CPU cores)",
    )
    p.add_argument("--data-dir", help="dataset root given to runs that don't set data.dir")
    p.add_argument("--runs-dir", help="run directories (default $MLBENCH_HOME/runs)")
    p.add_argument(
        "--no-scheduler", action="store_true", help="only record runs; never launch them"
    )
    p.add_argument(
        "--open-reads",
        action="store_true",
        default=os.environ.get("MLBENCH_OPEN_READS", "") in ("1", "true", "yes"),
        help="let anyone read runs, events and tasks without a token ($MLBENCH_OPEN_READS=1)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import uvicorn

    from mlbench.runs import default_runs_dir
    from mlbench.server.app import SchedulerSettings, create_app
    from mlbench.server.db import database_url, make_engine

    url = database_url()
    settings = None
    if not args.no_scheduler:
        settings = SchedulerSettings(
            master_url=f"http://{'127.0.0.1' if args.host == '0.0.0.0' else args.host}:{args.port}",
            runs_dir=Path(args.runs_dir).expanduser() if args.runs_dir else default_runs_dir(),
            capacity_workers=args.capacity_workers or os.cpu_count() or 1,
            data_dir=str(Path(args.data_dir).expanduser().resolve()) if args.data_dir else None,
        )
    app = create_app(make_engine(url), settings, open_reads=args.open_reads)
    print(f"mlbench master on http://{args.host}:{args.port} (database: {url.split('@')[-1]})")
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
