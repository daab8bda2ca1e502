"""``mlbench serve``: the master (REST API + database) under uvicorn."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlbench.server.slurm import SlurmPlacement


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="start the master: REST API and results database",
        description="Start the master. Database: a SQLite file under $MLBENCH_HOME, or "
        "PostgreSQL when MLBENCH_DATABASE_URL is set (postgresql://user@host:port/db). "
        "Migrations run on start. The API schema is at /openapi.json; limits and tokens: "
        "docs/server.md.",
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
        "--executor",
        choices=("local", "slurm", "kubernetes"),
        default=os.environ.get("MLBENCH_EXECUTOR", "local"),
        help="where admitted runs execute: worker processes on this machine (default), Slurm "
        "jobs submitted from this machine, a login node (docs/deploy.md#slurm), or an Indexed "
        "Job per run on the Kubernetes cluster the master runs in ($MLBENCH_EXECUTOR)",
    )
    slurm = p.add_argument_group("slurm executor", "placement of every run (--executor slurm)")
    slurm.add_argument(
        "--slurm-nproc-per-node",
        type=int,
        default=None,
        metavar="K",
        help="ranks per node: a run of W workers takes W/K nodes (default: GPUs per node, or 1)",
    )
    slurm.add_argument("--slurm-gpus-per-node", type=int, default=0, metavar="G")
    slurm.add_argument("--slurm-partition", metavar="P")
    slurm.add_argument("--slurm-time", metavar="T", help="time limit per job, e.g. 02:00:00")
    k8s = p.add_argument_group(
        "kubernetes executor", "docs/deploy.md#kubernetes-the-executor; the Helm chart sets these"
    )
    k8s.add_argument(
        "--k8s-config",
        metavar="FILE",
        default=os.environ.get("MLBENCH_KUBERNETES_CONFIG"),
        help="JSON settings of the runs' pods: namespace, image, resources, gpus, nodeSelector, "
        "tolerations, kueueQueue, ... ($MLBENCH_KUBERNETES_CONFIG; the chart's ConfigMap)",
    )
    k8s.add_argument(
        "--k8s-api-url",
        metavar="URL",
        help="the API server (e.g. a `kubectl proxy` at http://127.0.0.1:8001; token from "
        "$MLBENCH_K8S_TOKEN); default: the pod's in-cluster credentials",
    )
    p.add_argument(
        "--open-reads",
        action="store_true",
        default=os.environ.get("MLBENCH_OPEN_READS", "") in ("1", "true", "yes"),
        help="let anyone read runs, events and tasks without a token ($MLBENCH_OPEN_READS=1)",
    )
    limits = p.add_argument_group(
        "request limits",
        "the largest request body each endpoint reads; anything larger is answered 413 before "
        "it is read (docs/server.md)",
    )
    limits.add_argument(
        "--max-events-mb",
        type=float,
        default=8.0,
        help="an event batch (POST /api/runs/ID/events; 10,000 events fit in ~3 MB; default 8)",
    )
    limits.add_argument(
        "--max-import-mb",
        type=float,
        default=16.0,
        help="an imported result.json (POST /api/runs/import; default 16)",
    )
    limits.add_argument(
        "--max-body-mb", type=float, default=1.0, help="any other request body (default 1)"
    )
    p.add_argument(
        "--shutdown-timeout",
        type=float,
        default=5.0,
        help="on SIGTERM/Ctrl-C, seconds to let open requests finish before they are cut "
        "(live streams end at once; default 5)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import math
    import sys
    from pathlib import Path
    from types import FrameType

    import uvicorn

    from mlbench.runs import default_runs_dir
    from mlbench.server.app import SchedulerSettings, create_app
    from mlbench.server.db import database_url, make_engine
    from mlbench.server.guard import MIB, BodyLimits

    url = database_url()
    settings = None
    if not args.no_scheduler:
        settings = SchedulerSettings(
            master_url=f"http://{'127.0.0.1' if args.host == '0.0.0.0' else args.host}:{args.port}",
            runs_dir=Path(args.runs_dir).expanduser() if args.runs_dir else default_runs_dir(),
            capacity_workers=args.capacity_workers or os.cpu_count() or 1,
            data_dir=str(Path(args.data_dir).expanduser().resolve()) if args.data_dir else None,
        )
        if args.executor == "slurm":
            from mlbench.server.slurm import SlurmExecutor

            settings.executor = SlurmExecutor(
                settings.runs_dir,
                settings.master_url,
                settings.capacity_workers,
                _slurm_placement(args),
            )
        elif args.executor == "kubernetes":
            from mlbench.server.k8s.setup import kubernetes_executor

            settings.executor = kubernetes_executor(args.k8s_config, args.k8s_api_url)
    for flag in ("max_events_mb", "max_import_mb", "max_body_mb", "shutdown_timeout"):
        if not getattr(args, flag) > 0:
            print(f"mlbench: error: --{flag.replace('_', '-')} must be > 0", file=sys.stderr)
            return 2
    limits = BodyLimits(
        events=int(args.max_events_mb * MIB),
        imports=int(args.max_import_mb * MIB),
        other=int(args.max_body_mb * MIB),
    )
    app = create_app(make_engine(url), settings, open_reads=args.open_reads, limits=limits)
    print(f"mlbench master on http://{args.host}:{args.port} (database: {url.split('@')[-1]})")
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level="info",
        timeout_graceful_shutdown=math.ceil(args.shutdown_timeout),
    )
    stopping = app.state.master.stopping

    class Server(uvicorn.Server):
        """Tells the app's live streams to end as soon as shutdown begins: uvicorn waits for
        open responses before it exits, and a stream of a queued run never ends by itself (a
        probe's master was still alive 45 s after SIGTERM)."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            stopping.set()
            super().handle_exit(sig, frame)

    Server(config).run()
    return 0


def _slurm_placement(args: argparse.Namespace) -> SlurmPlacement:
    from mlbench.launch.slurm import SlurmSpec
    from mlbench.server.slurm import SlurmPlacement

    k = args.slurm_nproc_per_node or max(1, args.slurm_gpus_per_node)
    # the same checks `mlbench run --engine slurm` makes, now rather than at every launch
    SlurmSpec(1, k, args.slurm_gpus_per_node, args.slurm_partition, args.slurm_time).check()
    return SlurmPlacement(k, args.slurm_gpus_per_node, args.slurm_partition, args.slurm_time)
