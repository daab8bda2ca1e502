"""``mlbench tasks``: the task registry, from the same code that runs the tasks."""

from __future__ import annotations

import argparse
import json

from mlbench.registry import get_task, task_names


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tasks", help="list benchmark tasks (dataset, model, goals)")
    p.add_argument("--show", metavar="TASK", help="print every hyperparameter of one task")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.table import Table

    from mlbench.cli.output import console_for, id_column

    console = console_for()
    if args.show:
        spec = get_task(args.show).spec()
        if args.json:
            print(json.dumps(spec, indent=2))
            return 0
        t = spec["target"]
        console.print(f"[bold]{spec['id']} {spec['name']}[/] — {spec['title']}")
        console.print(f"dataset: {spec['dataset']}\nmodel: {spec['model']}")
        console.print(
            f"goal: {t['metric']} {'≥' if t['mode'] == 'max' else '≤'} {t['value']} "
            f"(light {t['light_value']})"
        )
        table = Table(id_column("key"), "default", "division", "meaning")
        for item in spec["config"]:
            table.add_row(
                item["key"],
                json.dumps(item["default"]),
                "open" if item["open"] else "closed",
                item["help"],
            )
        console.print(table)
        return 0
    specs = [get_task(name).spec() for name in task_names()]
    if args.json:
        print(json.dumps(specs, indent=2))
        return 0
    table = Table(
        id_column("id"),
        id_column("task"),
        "dataset",
        "model",
        "goal",
        "light goal",
        title="mlbench tasks",
    )
    for s in specs:
        t = s["target"]
        op = "≥" if t["mode"] == "max" else "≤"
        table.add_row(
            s["id"],
            s["name"],
            s["dataset"],
            s["model"],
            f"{t['metric']} {op} {t['value']:g}",
            f"{t['metric']} {op} {t['light_value']:g}",
        )
    console.print(table)
    return 0
