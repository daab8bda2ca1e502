"""``mlbench cluster create|delete|credentials gke|eks|kind``: make a cluster for the chart.

Prints the plan's teardown before creating anything, writes the config files it needs
(eksctl's cluster.yaml, kind.yaml) into ``--out-dir``, then runs each command in order and stops
at the first that fails. ``--dry-run`` prints the files and commands instead
(docs/deploy.md, "Cloud clusters")."""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cluster",
        help="create/delete a GKE, EKS or kind cluster and install the chart",
        description="Create, delete or fetch credentials for a Kubernetes cluster for mlbench, "
        "with gcloud, eksctl or kind, then `helm upgrade --install` the chart. --dry-run prints "
        "the commands and files without running anything.",
    )
    p.add_argument("action", choices=("create", "delete", "credentials"))
    p.add_argument("provider", choices=("gke", "eks", "kind"))
    p.add_argument("--name", default="mlbench", help="cluster name (default mlbench)")
    p.add_argument("--zone", help="GKE zone / EKS region (default us-central1-a / us-west-2)")
    p.add_argument("--nodes", type=int, default=2, help="run nodes (default 2)")
    p.add_argument("--gpus", metavar="TYPE:COUNT", help="GPUs per run node, e.g. nvidia-l4:1")
    p.add_argument("--namespace", default="mlbench", help="the chart's namespace")
    p.add_argument("--chart", default="charts/mlbench", help="path of the chart")
    p.add_argument("--out-dir", default=".", help="where config files are written (default .)")
    p.add_argument("--dry-run", action="store_true", help="print commands and files only")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mlbench.clusters import ClusterRequest, parse_gpus, plan

    req = ClusterRequest(
        args.provider,
        name=args.name,
        zone=args.zone,
        nodes=args.nodes,
        gpus=parse_gpus(args.gpus) if args.gpus else None,
        namespace=args.namespace,
        chart=args.chart,
    )
    steps = plan(args.action, req)
    if args.dry_run:
        sys.stdout.write(steps.render())
        return 0
    out = Path(args.out_dir)
    if steps.teardown:
        down = "; ".join(shlex.join(c) for c in steps.teardown)
        print(f"# to remove it again (also after a failure): (cd {out} && {down})", flush=True)
    for name, text in steps.files.items():
        (out / name).write_text(text)
        print(f"# wrote {out / name}", flush=True)
    for argv in steps.commands:
        print(f"$ {shlex.join(argv)}", flush=True)
        try:
            code = subprocess.run(argv, cwd=out).returncode
        except FileNotFoundError:
            print(f"mlbench: error: {argv[0]} is not installed", file=sys.stderr)
            return 2
        if code != 0:
            print(f"mlbench: error: {argv[0]} exited with {code}", file=sys.stderr)
            return 1
    return 0
