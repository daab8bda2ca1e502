"""``mlbench sweep TASK --workers 1 2 4 --repeats 3``: many runs of one task, grouped as a sweep.

The runs are the cross product worker counts × schemes (``--algorithm A B``) × ``--network``
specs × fault sets (``--fault none kill:rank=1,step=30``) × swept ``--set`` values (``--set
optim.lr=0.05,0.1``), each repeated ``--repeats`` times with seed = base seed +
repeat (base: ``--set seed=`` or the task's seed). Each run goes through the same
:class:`~mlbench.launch.session.LaunchSession` as ``mlbench run`` (local or Slurm engine), or is
submitted to a master (``--master``). ``SWEEPS_DIR/<sweep_id>/sweep.json`` records the plan and
every run's state, rewritten atomically after each change; each run's run.json records its
``sweep`` membership. A sweep is resumable: ``--resume ID_OR_DIR`` (or the same command with
``--sweep-id ID``) runs only what did not finish. Exit codes: 0 every run finished, 1 some run
failed, 2 a bad request (nothing ran), 130 interrupted (Ctrl-C/SIGTERM: the current run is
cancelled and sweep.json saved).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import signal
import time
from pathlib import Path
from types import FrameType
from typing import Any

from mlbench.errors import ConfigError

#: options that name files: resolved against the directory the sweep was started from on resume
PATH_OPTIONS = ("data_dir", "config", "runs_dir", "sweeps_dir")


def register(sub: argparse._SubParsersAction) -> None:
    from mlbench.cli.run import add_run_options

    p = sub.add_parser(
        "sweep",
        help="many runs of one task: worker counts × schemes × --set values × repeats",
        description="Run a task at every point of a sweep (worker counts × schemes × swept "
        "--set values), each point --repeats times with seed = base seed + repeat; resumable. "
        "--set KEY=V1,V2 is an axis (one point per value), --set KEY=V a fixed override; "
        "\\, is a comma inside a value and commas inside [...] belong to a list value "
        "(docs/reports.md#sweeps).",
    )
    p.add_argument("task", nargs="?", help="task name (see `mlbench tasks`)")
    p.add_argument(
        "--workers", "-n", type=int, nargs="+", default=[1], metavar="N", help="worker counts"
    )
    p.add_argument(
        "--algorithm",
        nargs="+",
        metavar="A",
        help="communication schemes to compare (default: the task's)",
    )
    p.add_argument("--repeats", type=int, default=1, help="runs of each point (seeds differ)")
    p.add_argument("--sweeps-dir", help="where sweep directories go (default $MLBENCH_HOME/sweeps)")
    p.add_argument(
        "--sweep-id",
        help="name the sweep; if it exists (same plan), continue it like --resume",
    )
    p.add_argument(
        "--resume",
        metavar="SWEEP_ID_OR_DIR",
        help="continue a sweep with its recorded command: runs that finished are kept, "
        "pending, cancelled and failed ones run (again)",
    )
    add_run_options(p, sweep=True)
    p.set_defaults(func=sweep)


# ---------------------------------------------------------------------------- the request


def _resumed_args(args: argparse.Namespace) -> tuple[argparse.Namespace, Path]:
    """``--resume X``: the recorded command's options, with relative paths taken from the
    directory it was started in, and the sweep directory."""
    from mlbench.cli.main import build_parser
    from mlbench.launch import sweep as sw

    plain = build_parser().parse_args(["sweep", "--resume", args.resume])
    allowed = ("argv", "sweeps_dir", "json")  # where to find it, how to print it
    extra = sorted(
        k for k, v in vars(args).items() if k not in allowed and getattr(plain, k, v) != v
    )
    if extra:
        flags = ", ".join("TASK" if k == "task" else "--" + k.replace("_", "-") for k in extra)
        raise ConfigError(f"--resume reruns the recorded command; leave out {flags}")
    sweeps_dir = Path(args.sweeps_dir or sw.default_sweeps_dir()).expanduser()
    sweep_dir = sw.locate(args.resume, sweeps_dir)
    data = sw.read(sweep_dir)
    command = data.get("command") or []
    if command[1:2] != ["sweep"]:
        raise ConfigError(f"{sweep_dir / sw.SWEEP_FILE} records no sweep command")
    stored = build_parser().parse_args(command[1:])
    cwd = Path(data.get("cwd") or ".")
    for name in PATH_OPTIONS:
        value = getattr(stored, name, None)
        if value is not None:
            setattr(stored, name, str(cwd / Path(value).expanduser()))
    stored.sweep_id, stored.sweeps_dir = data["sweep_id"], str(sweep_dir.parent)
    stored.resume, stored.json = None, args.json
    return stored, sweep_dir


def _common_overrides(args: argparse.Namespace, fixed: list[str]) -> list[str]:
    """Every run's overrides: the fixed ``--set`` values and the options that set config keys."""
    extra = list(fixed)
    if args.data_dir is not None:
        data_dir = args.data_dir if args.master else Path(args.data_dir).expanduser().resolve()
        extra.append(f"data.dir={data_dir}")  # a master's path is sent as given
    if args.goal is not None:
        extra.append(f"goal={args.goal}")
    if args.time_limit is not None:
        extra.append(f"train.time_limit={args.time_limit}")
    return extra


def run_overrides(common: list[str], entry: dict[str, Any], named: bool) -> list[str]:
    """One planned run's overrides: common, its scheme (when --algorithm named one), its swept
    values, its seed."""
    scheme = [f"algorithm.name={entry['algorithm']}"] if named else []
    return [*common, *scheme, *entry["overrides"], f"seed={entry['seed']}"]


def plan_entries(
    args: argparse.Namespace, common: list[str], axes: list[Any]
) -> list[dict[str, Any]]:
    """Every planned run, each resolved and checked as ``mlbench run`` would before starting
    (a bad value, a seed out of range: one line, exit 2, nothing run). Order: every point's
    repeat 0, then every point's repeat 1...: an interrupted sweep has seen each configuration
    before it has seen any twice."""
    from mlbench import runs
    from mlbench.launch import sweep as sw

    if args.repeats < 1:
        raise ConfigError(f"--repeats must be at least 1, got {args.repeats}")
    _, cfg = runs.resolve_config(args.task, config_file=args.config, overrides=common)
    algorithms = args.algorithm or [cfg.algorithm.name]
    if args.network:
        from mlbench.launch.network import parse_spec

        for spec in args.network:
            parse_spec(spec)  # a bad spec is one line before anything runs
    points = sw.plan(
        args.workers, algorithms, axes, args.network or [None], sw.fault_axis(args.faults)
    )
    base: dict[str, int] = {}
    for p in points:
        scheme = [f"algorithm.name={p.algorithm}"] if args.algorithm else []
        task, cfg = runs.resolve_config(
            args.task, config_file=args.config, overrides=[*common, *scheme, *p.overrides]
        )
        runs.validate_run(task, cfg, p.workers)
        base[p.name] = cfg.seed
    entries = [sw.entry(p, r, base[p.name] + r) for r in range(args.repeats) for p in points]
    for e in entries[len(points) :]:  # the later repeats' seeds are in range too
        runs.resolve_config(
            args.task,
            config_file=args.config,
            overrides=run_overrides(common, e, bool(args.algorithm)),
        )
    return entries


def _check_engine_options(args: argparse.Namespace) -> None:
    if args.master and args.engine != "local":
        raise ConfigError("--master runs on the master's executor; leave out --engine")
    if args.master and args.config:
        raise ConfigError("--config is not sent to a master; give its values with --set")
    if args.master and args.network:
        raise ConfigError("--network shapes local ranks: run the sweep without --master")
    if args.master and args.upload:
        raise ConfigError("runs on a master upload their events there; leave out --upload")
    if args.master:
        from mlbench.cli.run import check_local_only

        check_local_only(args)
    if args.faults:  # every point must be able to suffer its faults: checked before any runs
        from mlbench.faults import check_faults, parse_faults
        from mlbench.launch import sweep as sw

        for specs in sw.fault_axis(args.faults):
            faults = parse_faults(list(specs))
            check_faults(faults, min(args.workers), upload=bool(args.upload), engine=args.engine)
    if args.engine == "slurm":
        nproc = args.nproc_per_node or max(1, args.gpus_per_node)
        bad = [k for k in args.workers if k % nproc]
        if bad:
            raise ConfigError(
                f"--workers {bad[0]} is not a multiple of {nproc} ranks per node "
                "(--engine slurm allocates whole nodes)"
            )


def _slurm_args(args: argparse.Namespace, workers: int) -> argparse.Namespace:
    """The namespace ``mlbench run`` would have for one point (``slurm_spec`` reads it)."""
    one = copy.copy(args)
    one.workers = workers
    nproc = args.nproc_per_node or max(1, args.gpus_per_node)
    one.nodes = workers // nproc if args.engine == "slurm" else None
    return one


# ---------------------------------------------------------------------------- the command


def sweep(args: argparse.Namespace) -> int:
    from mlbench.launch import sweep as sw

    sweep_dir: Path | None = None
    if args.resume:
        args, sweep_dir = _resumed_args(args)
    elif not args.task:
        raise ConfigError("name a TASK, or --resume SWEEP_ID_OR_DIR")
    _check_engine_options(args)
    local_data = args.data_dir is not None and not args.master
    if local_data and not Path(args.data_dir).expanduser().is_dir():
        raise ConfigError(f"data directory {args.data_dir} does not exist")
    fixed, axes = sw.parse_sets(args.overrides)
    common = _common_overrides(args, fixed)
    planned = plan_entries(args, common, axes)
    if args.dry_run:
        return _print_plan(args, planned)
    if sweep_dir is None:
        sweeps_dir = Path(args.sweeps_dir or sw.default_sweeps_dir()).expanduser().resolve()
        sweep_id = sw.check_sweep_id(args.sweep_id or sw.new_sweep_id(args.task))
        sweep_dir = sweeps_dir / sweep_id
    with sw.locked(sweep_dir):
        data = _sweep_data(args, sweep_dir, planned)
        if args.master:
            from mlbench.cli.sweep_master import follow_on_master

            code = follow_on_master(args, sweep_dir, data, common)
        else:
            code = _run_here(args, sweep_dir, data, common)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        _print_final(data, sweep_dir)
    return code


def _sweep_data(
    args: argparse.Namespace, sweep_dir: Path, planned: list[dict[str, Any]]
) -> dict[str, Any]:
    """sweep.json as this invocation continues it: the stored one (same plan), or a new one."""
    from mlbench import runs
    from mlbench.launch import sweep as sw

    if (sweep_dir / sw.SWEEP_FILE).exists():
        data = sw.read(sweep_dir)
        data["points"] = sw.merge(planned, data["points"])
        return data
    if args.master:
        runs_dir = sweep_dir / "runs"  # the results of the master's runs are copied here
    else:
        runs_dir = Path(args.runs_dir).expanduser() if args.runs_dir else runs.default_runs_dir()
    data = {
        "format": sw.FORMAT,
        "sweep_id": sweep_dir.name,
        "task": args.task,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": ["mlbench", *getattr(args, "argv", ["sweep", args.task])],
        "cwd": os.getcwd(),
        "runs_dir": str(runs_dir.resolve()),
        "master": args.master,
        "repeats": args.repeats,
        "points": planned,
    }
    sweep_dir.mkdir(parents=True, exist_ok=True)
    sw.write(sweep_dir, data)
    return data


def _run_here(
    args: argparse.Namespace, sweep_dir: Path, data: dict[str, Any], common: list[str]
) -> int:
    """Run every unfinished planned run in turn through a LaunchSession (local or Slurm)."""
    from rich.console import Console

    from mlbench.cli.run import make_session, slurm_spec
    from mlbench.cli.sweep_view import SweepView
    from mlbench.launch import sweep as sw

    console = Console(stderr=True)
    todo = sw.to_run(data["points"])
    console.print(
        f"sweep {data['sweep_id']}: {len(todo)} of {len(data['points'])} runs to go → {sweep_dir}"
    )
    # every point checked fully (data too) before the first run starts: a bad request is exit 2
    specs: dict[int, Any] = {}
    for e in todo:
        if e["workers"] not in specs:
            specs[e["workers"]] = slurm_spec(_slurm_args(args, e["workers"]))
    checked: set[str] = set()
    for e in todo:
        if e["point"] not in checked:
            checked.add(e["point"])
            one = _slurm_args(args, e["workers"])
            make_session(
                one,
                specs[e["workers"]],
                e["workers"],
                run_overrides(common, e, bool(args.algorithm)),
                network=e.get("network"),
                faults=list(e.get("faults") or []),
            ).preflight()

    def _on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    for e in todo:
        sw.retry(e)
    sw.write(sweep_dir, data)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupted = False
    try:
        with SweepView(data, console) as view:
            for e in todo:
                state = _run_one(args, sweep_dir, data, e, common, specs[e["workers"]], view)
                if state == "cancelled":
                    interrupted = True
                    break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
        sw.write(sweep_dir, data)
    if interrupted:
        console.print(
            f"sweep interrupted; continue it with: mlbench sweep --resume {data['sweep_id']}"
            + (f" --sweeps-dir {sweep_dir.parent}" if args.sweeps_dir else "")
        )
        return 130
    return 1 if any(e["state"] == "failed" for e in data["points"]) else 0


def _run_one(
    args: argparse.Namespace,
    sweep_dir: Path,
    data: dict[str, Any],
    e: dict[str, Any],
    common: list[str],
    spec: Any,
    view: Any,
) -> str:
    """One planned run, start to end; its entry updated and sweep.json saved at each change."""
    from mlbench.cli.run import make_session
    from mlbench.errors import MlbenchError
    from mlbench.launch import sweep as sw

    membership = {"id": data["sweep_id"], "point": e["point"], "repeat": e["repeat"]}
    session = make_session(
        _slurm_args(args, e["workers"]),
        spec,
        e["workers"],
        run_overrides(common, e, bool(args.algorithm)),
        sweep=membership,
        network=e.get("network"),
        faults=list(e.get("faults") or []),
    )
    started = time.monotonic()
    try:
        session.preflight()
        run_dir = session.prepare()
    except MlbenchError as exc:  # checked before the sweep began; changed since (data, disk)
        e.update(state="failed", reason=str(exc))
        sw.write(sweep_dir, data)
        view.ended(e, time.monotonic() - started)
        return "failed"
    e.update(run_id=run_dir.name, run_dir=str(run_dir.resolve()))
    sw.write(sweep_dir, data)
    view.set_state(e, "running")
    try:
        result, outcome = session.execute(view.refresh)
    except KeyboardInterrupt:  # between the engine's end and result.json: still cancelled
        e.update(state="cancelled", reason="interrupted by user (Ctrl-C)")
        sw.write(sweep_dir, data)
        view.ended(e)
        raise
    e.update(state=outcome.state, reason=result.get("reason"))
    sw.write(sweep_dir, data)
    view.ended(e, time.monotonic() - started)
    return str(outcome.state)


def _print_plan(args: argparse.Namespace, planned: list[dict[str, Any]]) -> int:
    from rich.table import Table

    from mlbench.cli.output import console_for, id_column

    table = Table(
        id_column("point"),
        "workers",
        id_column("algorithm"),
        "overrides",
        "repeat",
        "seed",
        title=f"{args.task}: {len(planned)} runs planned",
    )
    for e in planned:
        table.add_row(
            e["point"],
            str(e["workers"]),
            e["algorithm"],
            " ".join([*e["overrides"], *(f"--fault {f}" for f in e.get("faults") or [])]),
            str(e["repeat"]),
            str(e["seed"]),
        )
    console_for().print(table)
    return 0


def _print_final(data: dict[str, Any], sweep_dir: Path) -> None:
    from rich.console import Console

    from mlbench.cli.output import console_for
    from mlbench.cli.sweep_view import SweepView

    view = SweepView(data, Console(stderr=True))
    console = console_for()
    console.print(view.table())
    console.print(view.footer())
    console.print(f"sweep directory: {sweep_dir}")
