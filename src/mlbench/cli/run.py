"""``mlbench run TASK``: resolve and check everything, start N local workers, report.

Everything that can be wrong with the request (task, overrides, worker count, data) is checked
here, before any worker starts, and reported as one line with exit code 2. Exit codes: 0 the run
finished (goal reached or not — both are results), 1 it failed, 130 it was interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from mlbench.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run a benchmark task on N local worker processes",
        description="Run a benchmark task on N local worker processes until its goal, "
        "max epochs/steps or the time limit.",
    )
    p.add_argument("task", help="task name (see `mlbench tasks`)")
    p.add_argument("--workers", "-n", type=int, default=1, help="number of worker processes")
    p.add_argument("--goal", choices=("full", "light"), help="stop at the full or light target")
    p.add_argument("--data-dir", help="dataset root (sets data.dir)")
    p.add_argument("--config", help="TOML/JSON file with config overrides")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config key, e.g. --set optim.lr=0.1 (repeatable)",
    )
    p.add_argument("--algorithm", help="communication scheme (sets algorithm.name)")
    p.add_argument("--time-limit", type=float, metavar="SECONDS", help="sets train.time_limit")
    p.add_argument(
        "--backend",
        default="auto",
        choices=("auto", "gloo", "nccl", "mpi"),
        help="torch.distributed backend (auto: nccl with CUDA, else gloo)",
    )
    p.add_argument(
        "--threads-per-worker",
        type=int,
        help="torch threads per worker (default: CPU cores / workers)",
    )
    p.add_argument("--runs-dir", help="where run directories go (default $MLBENCH_HOME/runs)")
    p.add_argument("--json", action="store_true", help="print result.json instead of a table")
    p.add_argument(
        "--upload",
        metavar="URL",
        help="also upload events to this master as they are written (token: "
        "$MLBENCH_UPLOAD_TOKEN); training never waits on it",
    )
    p.add_argument("--run-id", help="use this run id (the master's executor sets it)")
    p.add_argument(
        "--master",
        metavar="URL",
        help="submit to this master instead of running here (token: $MLBENCH_TOKEN)",
    )
    p.set_defaults(func=run)


def _overrides(args: argparse.Namespace) -> list[str]:
    extra = list(args.overrides)
    if args.data_dir is not None:
        extra.append(f"data.dir={Path(args.data_dir).expanduser().resolve()}")
    if args.goal is not None:
        extra.append(f"goal={args.goal}")
    if args.algorithm is not None:
        extra.append(f"algorithm.name={args.algorithm}")
    if args.time_limit is not None:
        extra.append(f"train.time_limit={args.time_limit}")
    return extra


def _check_backend(requested: str, workers: int) -> None:
    """nccl needs one GPU per local worker; say so now rather than failing inside NCCL."""
    import torch

    from mlbench.dist import resolve_backend

    if requested == "mpi" and not torch.distributed.is_mpi_available():
        raise ConfigError("backend mpi is not built into this torch")
    if requested == "auto" and not torch.cuda.is_available():
        return
    if resolve_backend(requested) == "nccl" and workers > torch.cuda.device_count():
        raise ConfigError(
            f"{workers} workers is impossible with nccl here: it needs one GPU per worker and "
            f"{torch.cuda.device_count()} are visible (use --backend gloo to share)"
        )


def run(args: argparse.Namespace) -> int:
    from mlbench import runs
    from mlbench.tasks.base import Task

    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")
    if args.threads_per_worker is not None and args.threads_per_worker < 1:
        raise ConfigError("--threads-per-worker must be at least 1")
    if args.master:
        from mlbench.cli.client import submit

        extra = [o for o in _overrides(args) if not o.startswith("data.dir=")]
        if args.data_dir is not None:  # a path on the master's machine: send it as given
            extra.append(f"data.dir={args.data_dir}")
        return submit(args, extra)
    if args.data_dir is not None and not Path(args.data_dir).expanduser().is_dir():
        raise ConfigError(f"data directory {args.data_dir} does not exist")
    task, cfg = runs.resolve_config(args.task, config_file=args.config, overrides=_overrides(args))
    if cfg.data.dir and not Path(cfg.data.dir).expanduser().is_dir():
        raise ConfigError(f"data directory {cfg.data.dir} does not exist")
    runs.validate_run(task, cfg, args.workers)
    info = task.prepare_data(cfg)
    per_rank = info.train_size // args.workers
    if isinstance(task, Task) and per_rank < cfg.data.batch_size * cfg.train.accumulate:
        raise ConfigError(
            f"{args.workers} workers is impossible here: each would get {per_rank} of "
            f"{info.train_size} training samples, less than one batch of {cfg.data.batch_size}"
        )
    _check_backend(args.backend, args.workers)
    cores = os.cpu_count() or 1
    threads = args.threads_per_worker or max(1, cores // args.workers)

    runs_dir = Path(args.runs_dir).expanduser() if args.runs_dir else runs.default_runs_dir()
    run_dir = runs.create_run_dir(runs_dir, task.name, args.run_id)
    runs.write_config(run_dir, cfg)
    launch_info: dict[str, Any] = {
        "workers": args.workers,
        "backend_requested": args.backend,
        "threads_per_worker": threads,
        "command": sys.argv,
        "data": info.description,
        "official_data_issues": list(info.issues),
        "created": time.time(),
    }
    runs.write_launch(run_dir, launch_info)
    return _launch(run_dir, task, cfg, args, threads, launch_info)


def _launch(
    run_dir: Path,
    task: Any,
    cfg: Any,
    args: argparse.Namespace,
    threads: int,
    launch_info: dict[str, Any],
) -> int:
    from rich.console import Console

    from mlbench.cli.output import RunProgress, print_summary
    from mlbench.launch.local import LocalLauncher

    console = Console(stderr=True)
    console.print(f"run {run_dir.name}: {args.workers} worker(s) × {threads} thread(s) → {run_dir}")
    launcher = LocalLauncher(run_dir, args.workers, args.backend, threads)

    def _on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # SIGTERM and SIGINT both stop every rank cleanly. SIGINT is set explicitly: a process
    # started from a non-interactive shell's background job inherits it *ignored*, and Python
    # then never installs its KeyboardInterrupt handler
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    uploader = None
    if args.upload:
        from mlbench.telemetry.uploader import Uploader

        uploader = Uploader(
            run_dir,
            run_dir.name,
            args.upload,
            args.workers,
            token=os.environ.get("MLBENCH_UPLOAD_TOKEN"),
        )
        uploader.start()
    try:
        launcher.start()
        with RunProgress(run_dir, task.target.metric, console) as progress:
            outcome = launcher.wait(on_tick=progress.tick)
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
        if uploader is not None:
            complete = uploader.finish(timeout=120)
            uploader.close()
            if not complete:
                console.print(
                    f"[yellow]events not fully uploaded ({uploader.last_error}); they are in "
                    f"{run_dir} — `mlbench import {run_dir} --master {args.upload}` resends them"
                )

    result = _final_result(run_dir, task, cfg, args, outcome, launch_info)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_summary(result, run_dir)
    return {"finished": 0, "failed": 1, "cancelled": 130}[outcome.state]


def _final_result(
    run_dir: Path,
    task: Any,
    cfg: Any,
    args: argparse.Namespace,
    outcome: Any,
    launch_info: dict[str, Any],
) -> dict[str, Any]:
    """Rank 0's result.json plus launcher facts; or, on failure, a result rebuilt from events."""
    from mlbench import runs
    from mlbench.results.from_events import ranks_from_events
    from mlbench.results.summary import RESULT_FILE, load_result, write_result

    launcher_facts = {
        "wall_time_total": outcome.wall_time,
        "exit_codes": outcome.exit_codes,
        "threads_per_worker": launch_info["threads_per_worker"],
        "command": launch_info["command"],
    }
    if outcome.state == "finished" and (run_dir / RESULT_FILE).exists():
        result = load_result(run_dir)
    else:
        if outcome.state == "finished":  # all exited 0 but rank 0 wrote nothing: still a failure
            outcome.state, outcome.reason = "failed", "workers exited without writing result.json"
        result = runs.make_result(
            run_dir,
            task,
            cfg,
            state=outcome.state,
            reason=outcome.reason,
            world_size=args.workers,
            backend=None,
            ranks=ranks_from_events(run_dir, args.workers),
        )
    result["launcher"] = launcher_facts
    write_result(run_dir, result)
    return result
