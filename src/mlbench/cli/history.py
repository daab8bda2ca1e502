"""``mlbench history TASK``: time-to-target and throughput across mlbench versions, with the
newest version's regression verdict (``mlbench.results.history`` states the rule).

Sources: local run directories (``--runs-dir``, default ``$MLBENCH_HOME/runs``) or a master's
stored results (``--master URL``; runs imported with ``mlbench import`` are among them).
``--config``/``--set`` pick one configuration (the same flags as ``mlbench run``); without them
every configuration found is shown.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "history",
        help="a task's results across mlbench versions; flags regressions",
        description="Time-to-target and throughput of a task across mlbench versions, per "
        "configuration and environment, and whether the newest version regressed "
        "(its median beyond the previous version's interval; docs/reports.md).",
    )
    p.add_argument("task", help="task name (see `mlbench tasks`)")
    p.add_argument("--config", help="TOML/JSON file: only this configuration")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--goal", choices=("full", "light"), help="with --config/--set: the goal")
    p.add_argument("--algorithm", help="with --config/--set: the scheme (algorithm.name)")
    p.add_argument("--master", help="read the master's stored results instead of run dirs")
    p.add_argument("--runs-dir", help="run directories (default $MLBENCH_HOME/runs)")
    p.add_argument("--json", action="store_true", help="print the series as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mlbench.config import flat_items, to_dict
    from mlbench.errors import MlbenchError
    from mlbench.results import history
    from mlbench.runs import mlbench_home, resolve_config

    task, spec = resolve_config(args.task)
    open_keys = {k for k, _, f in flat_items(spec) if f.metadata.get("open", False)}
    wanted = None
    if args.config or args.overrides or args.goal or args.algorithm:
        extra = [f"goal={args.goal}"] if args.goal else []
        extra += [f"algorithm.name={args.algorithm}"] if args.algorithm else []
        _, cfg = resolve_config(
            args.task, config_file=args.config, overrides=[*args.overrides, *extra]
        )
        wanted = history.config_hash(to_dict(cfg), open_keys)
    if args.master:
        runs = history.master_runs(args.master, task.name, os.environ.get("MLBENCH_TOKEN"))
        where = args.master
    else:
        runs_dir = Path(args.runs_dir).expanduser() if args.runs_dir else mlbench_home() / "runs"
        runs = history.local_runs(runs_dir, task.name)
        where = str(runs_dir)
    series = history.build(runs, open_keys, wanted)
    if args.json:
        print(json.dumps([s.to_dict() for s in series], indent=2))
    elif not series:
        raise MlbenchError(f"no finished runs of {task.name} in {where}")
    else:
        _print(series)
    regressed = any(v["verdict"] == "regression" for s in series for v in s.verdicts().values())
    return 1 if regressed else 0


def _num(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _print(series: list[Any]) -> None:
    from rich.table import Table

    from mlbench.cli.output import console_for, id_column

    console = console_for()
    for s in series:
        table = Table(
            id_column("version"),
            "repeats",
            "missed",
            "time to target s: median (min–max)",
            "throughput /s: median (min–max)",
            title=f"{s.task} · config {s.config} · {s.world_size} workers\n{s.environment}",
        )
        for v in s.versions:
            row = v.row()
            t, q = row["time_to_target"], row["throughput"]
            table.add_row(
                v.version,
                str(row["repeats"]),
                str(row["missed"]),
                f"{_num(t['median'], '.3f')} ({_num(t['min'], '.3f')}–{_num(t['max'], '.3f')})",
                f"{_num(q['median'], '.4g')} ({_num(q['min'], '.4g')}–{_num(q['max'], '.4g')})",
            )
        console.print(table)
        for measure, v in s.verdicts().items():
            lo, hi = v["previous_interval"]
            console.print(
                f"  {measure}: {v['verdict']} (newest median {_num(v['median'], '.4g')}; "
                f"previous version {v['interval']} {_num(lo, '.4g')} to {_num(hi, '.4g')})"
            )
