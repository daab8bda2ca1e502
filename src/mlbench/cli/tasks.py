"""``mlbench tasks``: the task registry, from the same code that runs the tasks.

``mlbench tasks --markdown`` writes docs/tasks.md from the same specs, so that page cannot drift
from the code (tests/e2e/test_tasks_md.py fails when it is stale).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from mlbench.registry import TASKS, task_names
from mlbench.runs import task_spec

#: how docs/tasks.md is regenerated (its header and the staleness test both say so)
REGENERATE = "mlbench tasks --markdown > docs/tasks.md"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tasks", help="list benchmark tasks (dataset, model, goals)")
    p.add_argument("--show", metavar="TASK", help="print every hyperparameter of one task")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--markdown",
        action="store_true",
        help=f"every built-in task's spec as Markdown (docs/tasks.md: {REGENERATE})",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.table import Table

    from mlbench.cli.output import console_for, id_column

    if args.markdown:
        print(markdown([task_spec(name) for name in TASKS]), end="")
        return 0
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
        for deviation in spec["deviations"]:
            console.print(f"deviation from the original: {deviation}")
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


def _goal(spec: dict[str, Any]) -> str:
    t = spec["target"]
    if spec["kind"] == "measurement":
        return "none: a measurement, not a training run"
    op = "≥" if t["mode"] == "max" else "≤"
    return f"{t['metric']} {op} {t['value']:g} (light: {op} {t['light_value']:g})"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(specs: list[dict[str, Any]]) -> str:
    """docs/tasks.md: each task's identity, goal, deviations from the original MLBench and its
    whole config table, ordered by task id."""
    out = [
        "# Tasks",
        "",
        f"<!-- generated from the task classes by `{REGENERATE}`; do not edit by hand -->",
        "",
        "Every built-in task as the code defines it (`mlbench tasks --show TASK` prints the same "
        "for one task, with every scheme's options). A run is *official* when every **closed** "
        "key keeps its default; **open** keys (paths, logging, stopping) may change freely. "
        "Deviations are the places where a task departs on purpose from the original MLBench "
        "(facts in `../shared/reference/MLBENCH.md`), each with its reason. How times are "
        "measured, the same for every task, is in [timing.md](timing.md).",
        "",
    ]
    for spec in sorted(specs, key=lambda s: s["id"]):
        out += [
            f"## {spec['id']} `{spec['name']}` — {spec['title']}",
            "",
            "| | |",
            "|---|---|",
            f"| dataset | {_cell(spec['dataset'])} |",
            f"| model | {_cell(spec['model'])} |",
            f"| goal | {_cell(_goal(spec))} |",
            f"| throughput unit | {spec['unit']} |",
            f"| kind | {spec['kind']} |",
            "",
            "Deviations from the original MLBench:",
            "",
        ]
        out += [f"- {d}" for d in spec["deviations"]] or ["- none recorded"]
        out += ["", "| key | default | division | meaning |", "|---|---|---|---|"]
        for item in spec["config"]:
            default = _cell(json.dumps(item["default"]))
            division = "open" if item["open"] else "closed"
            out.append(f"| `{item['key']}` | `{default}` | {division} | {_cell(item['help'])} |")
        out.append("")
    return "\n".join(out)
