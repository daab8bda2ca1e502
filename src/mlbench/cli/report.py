"""``mlbench report SWEEP_DIR_OR_RUN_DIRS... --out DIR``: a self-contained HTML page, report.json
and PNG/SVG figures from a sweep (its sweep.json) or run directories (docs/reports.md)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="HTML report with statistics and figures from a sweep or run directories",
        description="Group the runs into configurations (same task and config but the seed, "
        "same worker count), compute median, mean, bootstrap interval and olympic mean of the "
        "time to target, speedup and efficiency, and write report.html (self-contained), "
        "report.json and the figures as PNG and SVG into --out.",
    )
    p.add_argument("inputs", nargs="+", type=Path, metavar="SWEEP_DIR_OR_RUN_DIR")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--prices", type=Path, help="price table (TOML; default: the packaged one)")
    p.add_argument(
        "--node-type",
        default=None,
        help="node type in the price table (default: n1-standard-4-preemptible)",
    )
    p.add_argument(
        "--workers-per-node",
        type=int,
        default=1,
        help="workers sharing one priced node (default 1, as the original MLBench ran)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mlbench.report.build import build_report
    from mlbench.report.prices import DEFAULT_NODE

    page = build_report(
        args.inputs,
        args.out,
        prices=args.prices,
        node_type=args.node_type or DEFAULT_NODE,
        workers_per_node=args.workers_per_node,
    )
    print(page)
    return 0
