"""``mlbench export jobset TASK``: the run the Kubernetes executor would launch, as a JobSet
manifest (``jobset.x-k8s.io/v1alpha2``) for clusters that run the JobSet controller — e.g. to
submit it through Kueue or a GitOps pipeline instead of the master. Printed as YAML; the pods'
settings come from the same file the master uses (``--k8s-config``, the chart's ConfigMap).

``mlbench export mllog RUN_DIR``: a finished run as an MLPerf Training log (``:::MLLOG`` lines,
``mlbench.results.mllog``), checked with MLCommons' compliance checker with ``--check``."""

from __future__ import annotations

import argparse
import os
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a run as a Kubernetes manifest (JobSet) or an MLPerf log (mllog)",
        description="jobset TASK: print the run the Kubernetes executor would launch as a JobSet "
        "manifest, after the Secret its pods mount (the resolved config; with --master-url also "
        "the upload token, from $MLBENCH_UPLOAD_TOKEN: `mlbench token create --scope upload`). "
        "mllog RUN_DIR: write a finished run as an MLPerf Training log (docs/reports.md).",
    )
    p.add_argument("format", choices=("jobset", "mllog"))
    p.add_argument("task", metavar="TASK|RUN_DIR", help="jobset: task name; mllog: run directory")
    g = p.add_argument_group("mllog")
    g.add_argument("--out", metavar="FILE", help="the log file (default RUN_DIR/mlperf.log)")
    g.add_argument("--benchmark", help="submission_benchmark (default: the task's MLPerf name)")
    g.add_argument(
        "--division", choices=("closed", "open"), help="default: closed iff the run is official"
    )
    g.add_argument("--org", default="mlbench", help="submission_org")
    g.add_argument(
        "--status", default="research", choices=("onprem", "cloud", "research", "preview")
    )
    g.add_argument("--check", action="store_true", help="run MLCommons' compliance checker")
    g.add_argument("--ruleset", help="the checker's ruleset (default: the benchmark's)")
    p.add_argument("--nodes", type=int, default=2, help="pods, one per node (default 2)")
    p.add_argument("--goal", choices=("full", "light"), default="full")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--algorithm", default="allreduce", help="communication scheme")
    p.add_argument("--data-dir", help="dataset root inside the pods (sets data.dir)")
    p.add_argument("--backend", default="auto", choices=("auto", "gloo", "nccl", "mpi"))
    p.add_argument("--run-id", help="run id (default: a new one)")
    p.add_argument(
        "--k8s-config",
        metavar="FILE",
        default=os.environ.get("MLBENCH_KUBERNETES_CONFIG"),
        help="the executor settings (image, namespace, resources, gpus, ...)",
    )
    p.add_argument("--image", help="worker image (overrides the settings file)")
    p.add_argument("--master-url", help="upload events to this master (needs the Secret)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.format == "mllog":
        return _mllog(args)
    import yaml

    from mlbench.config import to_dict
    from mlbench.errors import ConfigError
    from mlbench.runs import new_run_id
    from mlbench.server.k8s import manifests
    from mlbench.server.k8s.setup import load_placement
    from mlbench.server.services import resolve_run_config

    if args.nodes < 1:
        raise ConfigError("--nodes must be at least 1")
    if args.k8s_config:
        placement = load_placement(args.k8s_config)
        if args.image:
            placement.image = args.image
    else:
        placement = manifests.Placement(image=args.image or "")
    task, cfg = resolve_run_config(
        args.task, args.overrides, args.goal, args.algorithm, args.data_dir
    )
    k = placement.gpus_per_node or 1
    spec = manifests.RunSpec(
        run_id=args.run_id or new_run_id(task.name),
        task=task.name,
        config=to_dict(cfg),
        nodes=args.nodes,
        nproc_per_node=k,
        backend=args.backend,
        master_url=args.master_url or None,
        placement=placement,
    )
    token = os.environ.get("MLBENCH_UPLOAD_TOKEN", "")
    if spec.master_url and not token:
        raise ConfigError("--master-url needs the run's upload token in $MLBENCH_UPLOAD_TOKEN")
    docs = [manifests.secret(spec, token), manifests.jobset(spec)]
    sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=False))
    return 0


def _mllog(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mlbench.results import mllog

    path = mllog.export(
        Path(args.task).expanduser(),
        Path(args.out) if args.out else None,
        benchmark=args.benchmark,
        division=args.division,
        org=args.org,
        status=args.status,
    )
    print(f"wrote {path}")
    if not args.check:
        return 0
    ruleset, benchmark = mllog.ruleset_for(path)
    ok, messages = mllog.check(path, args.ruleset)
    what = f"{benchmark} rules" if benchmark else "common rules (no MLPerf benchmark)"
    if messages:
        print(messages, file=sys.stderr)
    print(
        f"compliance checker, training {args.ruleset or ruleset}, {what}: "
        + ("passed" if ok else "FAILED")
    )
    return 0 if ok else 1
