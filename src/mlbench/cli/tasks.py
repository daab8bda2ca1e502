"""``mlbench tasks``: the task registry, from the same code that runs the tasks."""

from __future__ import annotations

import argparse
import json

from mlbench.registry import task_names
from mlbench.runs import task_spec


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
        from mlbench.runs import algorithm_specs

        spec = task_spec(args.show)
        # every scheme's own options (built-in and plug-in), each a typed algorithm.* key once
        # algorithm.name selects that scheme; the table above shows the default scheme's
        spec["schemes"] = algorithm_specs()
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
        schemes = Table(id_column("scheme"), id_column("option"), "default", "division", "meaning")
        for scheme in spec["schemes"]:
            for opt in scheme["options"]:
                schemes.add_row(
                    scheme["name"],
                    opt["key"],
                    json.dumps(opt["default"]),
                    "open" if opt["open"] else "closed",
                    opt["help"],
                )
        console.print("scheme options (with --algorithm NAME / --set algorithm.name=NAME):")
        console.print(schemes)
        return 0
    specs = [task_spec(name) for name in task_names()]
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
