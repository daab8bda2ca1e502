"""``mlbench`` entry point: parses the command line and dispatches to a command module.

Heavy imports (torch) happen inside the commands, so ``mlbench --help`` is instant. Any
:class:`~mlbench.errors.MlbenchError` becomes a one-line message and exit code 2.
"""

from __future__ import annotations

import argparse
import sys

from mlbench import __version__
from mlbench.errors import MlbenchError

EPILOG = """examples:
  mlbench tasks
  mlbench run cifar10-resnet20 --workers 2 --goal light --data-dir DATA
  mlbench run epsilon-logreg --workers 2 --set data.dataset=a9a --data-dir DATA
  mlbench sweep epsilon-logreg --workers 1 2 4 --repeats 3 --set data.dataset=a9a --data-dir DATA
"""


def build_parser() -> argparse.ArgumentParser:
    from mlbench.cli import client as client_cmd
    from mlbench.cli import cluster as cluster_cmd
    from mlbench.cli import data as data_cmd
    from mlbench.cli import export as export_cmd
    from mlbench.cli import history as history_cmd
    from mlbench.cli import imports as import_cmd
    from mlbench.cli import node as node_cmd
    from mlbench.cli import report as report_cmd
    from mlbench.cli import run as run_cmd
    from mlbench.cli import serve as serve_cmd
    from mlbench.cli import sweep as sweep_cmd
    from mlbench.cli import tasks as tasks_cmd
    from mlbench.cli import token as token_cmd

    parser = argparse.ArgumentParser(
        prog="mlbench",
        description="Reproducible benchmarks for distributed machine-learning training.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mlbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    tasks_cmd.register(sub)
    run_cmd.register(sub)
    sweep_cmd.register(sub)
    serve_cmd.register(sub)
    import_cmd.register(sub)
    token_cmd.register(sub)
    client_cmd.register(sub)
    data_cmd.register(sub)
    cluster_cmd.register(sub)
    export_cmd.register(sub)
    report_cmd.register(sub)
    history_cmd.register(sub)
    node_cmd.register(sub)
    worker = sub.add_parser(
        "worker", help="one rank's process (started by `mlbench run` or torchrun)", add_help=False
    )
    worker.set_defaults(func=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["worker"]:
        from mlbench.launch.worker import exit_now
        from mlbench.launch.worker import main as worker_main

        exit_now(worker_main(argv[1:]))
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(argv)  # the command line as given: a sweep records it, to be resumed
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except MlbenchError as exc:
        print(f"mlbench: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
