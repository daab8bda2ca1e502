"""``mlbench run TASK``: resolve and check everything, start N local workers, report.

Everything that can be wrong with the request (task, overrides and their ranges, worker count,
CPU cores, data down to each LIBSVM line, a run directory that cannot be written) is checked here,
before any worker starts, and reported as one line with exit code 2. Exit codes: 0 the run
finished (goal reached or not — both are results), 1 it failed, 130 it was interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
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
    p.add_argument("task", nargs="?", help="task name (see `mlbench tasks`)")
    p.add_argument("--workers", "-n", type=int, default=1, help="number of worker processes")
    p.add_argument("--algorithm", help="communication scheme (sets algorithm.name)")
    p.add_argument("--run-id", help="use this run id (the master's executor sets it)")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a stopped, failed or cancelled local run in place from its latest "
        "checkpoint, with its own config and launch settings (docs/checkpoints.md)",
    )
    add_run_options(p)
    p.set_defaults(func=run)


def add_run_options(p: argparse.ArgumentParser, *, sweep: bool = False) -> None:
    """The options every way of running a task shares (``mlbench run`` and ``mlbench sweep``):
    one definition, so a sweep takes exactly what a run takes. ``sweep`` changes only help
    texts (``--set`` may name an axis there; ``--master`` submits every point)."""
    p.add_argument("--goal", choices=("full", "light"), help="stop at the full or light target")
    p.add_argument("--data-dir", help="dataset root (sets data.dir)")
    p.add_argument("--config", help="TOML/JSON file with config overrides")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE[,VALUE...]" if sweep else "KEY=VALUE",
        help="sweep axis when it lists several comma-separated values (KEY=V1,V2: one point "
        "each), fixed override with one value; \\, is a literal comma, commas inside [...] "
        "belong to the list value (repeatable)"
        if sweep
        else "override one config key, e.g. --set optim.lr=0.1 (repeatable)",
    )
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
        help="torch threads per worker (default: CPU cores / workers, at least 1)",
    )
    p.add_argument(
        "--oversubscribe",
        action="store_true",
        help="run even when workers × threads per worker exceed this machine's CPU cores "
        "(refused by default, exit 2: the step times would measure the OS scheduler); "
        "prints a warning instead",
    )
    p.add_argument("--runs-dir", help="where run directories go (default $MLBENCH_HOME/runs)")
    p.add_argument(
        "--json",
        action="store_true",
        help="print sweep.json at the end instead of a table"
        if sweep
        else "print result.json instead of a table",
    )
    p.add_argument(
        "--upload",
        metavar="URL",
        help="also upload events to this master as they are written (token: "
        "$MLBENCH_UPLOAD_TOKEN); training never waits on it",
    )
    p.add_argument(
        "--fault",
        dest="faults",
        action="append",
        nargs="+" if sweep else None,
        default=[],
        metavar="SPEC",
        help="inject a failure (repeatable; the run is then never official; docs/faults.md): "
        "kill:rank=R,step=S | kill:rank=R,after=5s | hang:rank=R,step=S | "
        "slow:rank=R,factor=F | master-down:after=T,for=D (with --upload)"
        + (
            "; several specs after one --fault: one point each (an axis), `none` a point "
            "without, A+B two faults in one point"
            if sweep
            else ""
        ),
    )
    p.add_argument(
        "--max-restarts",
        type=int,
        default=0,
        metavar="N",
        help="after a rank fails (or hangs: train.hang_timeout), stop the others and restart "
        "every rank, up to N times (local engine only; default 0: fail fast)",
    )
    p.add_argument(
        "--master",
        metavar="URL",
        help="submit every point to this master as a run and follow them (token: $MLBENCH_TOKEN)"
        if sweep
        else "submit to this master instead of running here (token: $MLBENCH_TOKEN)",
    )
    p.add_argument(
        "--network",
        metavar="bandwidth=RATE[,loss=P]",
        nargs="+" if sweep else None,
        help="local engine, root: each rank in its own network namespace, its link shaped "
        "with tc tbf (e.g. bandwidth=100mbit); measured before training and recorded in "
        "result.json (docs/network.md). latency= is refused on this kernel (no netem)"
        + ("; several specs: one point each (an axis)" if sweep else ""),
    )
    slurm = p.add_argument_group(
        "cluster engines",
        "--engine slurm submits the run as one Slurm batch job from this login node (the run "
        "directory must be on the cluster's shared filesystem; docs/deploy.md#slurm)",
    )
    slurm.add_argument(
        "--engine",
        choices=("local", "slurm"),
        default="local",
        help="local: worker processes on this machine (default); slurm: sbatch + srun",
    )
    if not sweep:  # a sweep derives the nodes of each point from its worker count
        slurm.add_argument("--nodes", type=int, metavar="N", help="nodes to allocate (slurm)")
    slurm.add_argument(
        "--nproc-per-node",
        type=int,
        metavar="K",
        help="ranks per node (slurm; default: --gpus-per-node, or 1 without GPUs)",
    )
    slurm.add_argument(
        "--gpus-per-node", type=int, default=0, metavar="G", help="GPUs per node (slurm)"
    )
    slurm.add_argument("--partition", metavar="P", help="Slurm partition (default: the cluster's)")
    slurm.add_argument(
        "--time",
        metavar="T",
        help="Slurm time limit, e.g. 30 or 02:00:00 (default: the partition's)",
    )
    slurm.add_argument(
        "--dry-run",
        action="store_true",
        help="check every point and print the plan; run nothing"
        if sweep
        else "check the request and print the batch script; submit nothing (slurm)",
    )


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


def run(args: argparse.Namespace) -> int:
    if args.resume is not None:
        return _resume(args)
    if args.task is None:
        raise ConfigError("name a task (see `mlbench tasks`), or --resume RUN_DIR")
    if args.master:
        from mlbench.cli.client import submit

        if args.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {args.workers}")
        if args.network:
            raise ConfigError("--network shapes local ranks: run without --master")
        check_local_only(args)
        extra = [o for o in _overrides(args) if not o.startswith("data.dir=")]
        if args.data_dir is not None:  # a path on the master's machine: send it as given
            extra.append(f"data.dir={args.data_dir}")
        return submit(args, extra)
    if args.data_dir is not None and not Path(args.data_dir).expanduser().is_dir():
        raise ConfigError(f"data directory {args.data_dir} does not exist")
    spec = slurm_spec(args)
    session = make_session(
        args, spec, args.workers, _overrides(args), run_id=args.run_id, network=args.network
    )
    task, _ = session.preflight()  # everything checked before anything exists (exit 2)
    if spec is not None and args.dry_run:
        return _dry_run(spec, session)
    run_dir = session.prepare()  # an unwritable run directory is exit 2 too, still no worker
    for warning in session.warnings:
        print(warning, file=sys.stderr)
    return _execute(session, run_dir, task.target.metric, args)


def check_local_only(args: argparse.Namespace) -> None:
    """--fault and --max-restarts act in this process's engine: a master's runs get neither."""
    if args.faults or args.max_restarts:
        raise ConfigError("--fault and --max-restarts are not sent to a master; run here")


#: options that would change what a resumed run is: it continues as it was launched
_FIXED_ON_RESUME = (
    ("TASK", "task"),
    ("--workers", "workers"),
    ("--algorithm", "algorithm"),
    ("--run-id", "run_id"),
    ("--goal", "goal"),
    ("--data-dir", "data_dir"),
    ("--config", "config"),
    ("--set", "overrides"),
    ("--time-limit", "time_limit"),
    ("--threads-per-worker", "threads_per_worker"),
    ("--runs-dir", "runs_dir"),
    ("--master", "master"),
    ("--nodes", "nodes"),
    ("--nproc-per-node", "nproc_per_node"),
    ("--partition", "partition"),
    ("--time", "time"),
)


def _resume(args: argparse.Namespace) -> int:
    """``mlbench run --resume RUN_DIR``: the run's own config and launch settings, nothing
    else — an option that would change them is refused rather than ignored."""
    from mlbench.errors import ResumeError
    from mlbench.launch.session import resume_session

    defaults = {"workers": 1, "overrides": []}
    given = [
        flag
        for flag, name in _FIXED_ON_RESUME
        if getattr(args, name, None) not in (None, defaults.get(name))
    ]
    if args.backend != "auto":
        given.append("--backend")
    if args.engine != "local" or args.dry_run:
        given.append("--engine/--dry-run")
    if given:
        raise ResumeError(
            f"--resume continues a run as it was launched; {', '.join(given)} cannot be given"
        )
    session = resume_session(Path(args.resume))
    assert session.task is not None and session.run_dir is not None
    session.request.upload = args.upload
    session.request.upload_token = os.environ.get("MLBENCH_UPLOAD_TOKEN")
    args.workers = session.request.workers  # for the banner
    return _execute(session, session.run_dir, session.task.target.metric, args)


def make_session(
    args: argparse.Namespace,
    spec: Any,
    workers: int,
    overrides: list[str],
    *,
    run_id: str | None = None,
    sweep: dict[str, Any] | None = None,
    network: str | None = None,
    faults: list[str] | None = None,
) -> Any:
    """The :class:`~mlbench.launch.session.LaunchSession` of one run as the command line asks
    for it (``spec``: the Slurm request, None for the local engine) — what ``mlbench run`` and
    each run of ``mlbench sweep`` execute (a sweep passes each point's ``faults``)."""
    from mlbench.launch.session import LaunchRequest, LaunchSession

    return LaunchSession(
        LaunchRequest(
            task=args.task,
            workers=spec.workers if spec else workers,
            backend=args.backend,
            config_file=args.config,
            overrides=overrides,
            threads_per_worker=args.threads_per_worker,
            runs_dir=Path(args.runs_dir) if args.runs_dir else None,
            run_id=run_id,
            upload=args.upload,
            upload_token=os.environ.get("MLBENCH_UPLOAD_TOKEN"),
            oversubscribe=args.oversubscribe,
            engine=args.engine,
            sweep=sweep,
            network=network,
            faults=list(args.faults) if faults is None else faults,
            max_restarts=args.max_restarts,
        ),
        **({"launcher_factory": slurm_factory(spec)} if spec else {}),
    )


def slurm_spec(args: argparse.Namespace) -> Any:
    """The Slurm request (a :class:`~mlbench.launch.slurm.SlurmSpec`), checked; None for the
    local engine, which refuses the cluster-only options rather than ignoring them."""
    if args.engine != "slurm":
        given = [
            flag
            for flag, value in (
                ("--nodes", args.nodes),
                ("--nproc-per-node", args.nproc_per_node),
                ("--gpus-per-node", args.gpus_per_node or None),
                ("--partition", args.partition),
                ("--time", args.time),
                ("--dry-run", args.dry_run or None),
            )
            if value is not None
        ]
        if given:
            raise ConfigError(f"{', '.join(given)} need --engine slurm")
        return None
    from mlbench.launch.slurm import SlurmSpec

    if args.nodes is None:
        raise ConfigError("--engine slurm needs --nodes N")
    spec = SlurmSpec(
        nodes=args.nodes,
        nproc_per_node=args.nproc_per_node or max(1, args.gpus_per_node),
        gpus_per_node=args.gpus_per_node,
        partition=args.partition,
        time=args.time,
        backend=args.backend,
        threads_per_worker=args.threads_per_worker,
    )
    spec.check()
    if args.workers not in (1, spec.workers):
        raise ConfigError(
            f"--workers {args.workers} differs from --nodes × --nproc-per-node = {spec.workers}"
            " (with --engine slurm, leave --workers out)"
        )
    return spec


def slurm_factory(spec: Any) -> Any:
    from mlbench.launch.slurm import SlurmLauncher

    def factory(run_dir: Path, request: Any, threads: int) -> SlurmLauncher:
        return SlurmLauncher(run_dir, spec)

    return factory


def _dry_run(spec: Any, session: Any) -> int:
    """Print the batch script the run would submit, for a run directory not yet created."""
    from mlbench import runs
    from mlbench.launch.slurm import batch_script

    r = session.request
    runs_dir = (r.runs_dir.expanduser() if r.runs_dir else runs.default_runs_dir()).resolve()
    run_id = r.run_id or runs.new_run_id(session.task.name)
    print(batch_script(spec, runs_dir / run_id), end="")
    return 0


def _execute(session: Any, run_dir: Path, metric: str, args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape

    from mlbench.cli.output import RunProgress, print_summary
    from mlbench.telemetry.uploader import QUARANTINE_FILE

    console = Console(stderr=True)
    if args.engine == "slurm":
        console.print(
            f"run {run_dir.name}: Slurm job of {args.nodes} node(s) × "
            f"{session.request.workers // args.nodes} rank(s) → {run_dir}"
        )
    else:
        console.print(
            f"run {run_dir.name}: {args.workers} worker(s) × {session.threads} thread(s) → "
            f"{run_dir}"
        )

    def _on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    def _upload_incomplete(reason: str) -> None:
        console.print(
            f"[yellow]events not fully uploaded: {escape(reason)}. They are in {run_dir} "
            f"(refused ones in {QUARANTINE_FILE}); fix or remove those lines, then "
            f"`mlbench import {run_dir} --master {args.upload}` completes the upload",
            soft_wrap=True,
        )

    # SIGTERM and SIGINT both stop every rank cleanly. SIGINT is set explicitly: a process
    # started from a non-interactive shell's background job inherits it *ignored*, and Python
    # then never installs its KeyboardInterrupt handler
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with RunProgress(run_dir, metric, console) as progress:
            result, outcome = session.execute(progress.tick, _upload_incomplete)
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_summary(result, run_dir)
    if (network := result.get("network")) and not network.get("within_tolerance"):
        console.print(
            f"[yellow]network flagged: {escape(str(network.get('flag')))}", soft_wrap=True
        )
    return {"finished": 0, "failed": 1, "cancelled": 130}[outcome.state]
