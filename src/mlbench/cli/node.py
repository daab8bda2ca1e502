"""``mlbench node``: the per-node agent — start this node's ranks of a multi-node run.

Run once per node by a cluster engine (Slurm's ``srun``, a Kubernetes Indexed Job's pods) on a
run directory the launcher prepared. Everything that goes wrong is said in one
``MLBENCH-ERROR:`` line on stderr, which engines take as the node's reason. Exit codes: 0 all
this node's ranks finished, 1 a rank failed (the agent stopped the others), 2 a bad request or
a master address that never resolved (no rank started), 130 stopped by SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from mlbench.errors import MlbenchError

DESCRIPTION = """\
Start this node's K ranks of an N-node run: global ranks R*K .. R*K+K-1, with
env:// rendezvous (RANK, LOCAL_RANK, WORLD_SIZE=N*K, MASTER_ADDR, MASTER_PORT), on
a run directory already prepared by the launcher (config.json; on a shared
filesystem for Slurm). A failing rank stops this node's other ranks at once;
ranks on other nodes fail on the broken collective and their agents end too.
Each rank writes RUN/rank-<global rank>.stdout/.stderr; the agent writes
RUN/node-<R>.json (its outcome) and, on failure, one MLBENCH-ERROR: line naming
the failing rank and its reason. result.json: rank 0 writes it when the run
finishes; on failure the launcher that prepared the run rebuilds it from the
event files (the agent never writes it).
"""

EPILOG = """\
exit codes: 0 finished, 1 a rank failed, 2 bad request or unresolved master
address (nothing started), 130 stopped (SIGINT/SIGTERM)

examples (two nodes, two ranks each, master = node 0):
  node0$ mlbench node --nnodes 2 --node-rank 0 --master-addr node0 \\
           --master-port 29500 --nproc-per-node 2 --run-dir /shared/runs/RUN
  node1$ mlbench node --nnodes 2 --node-rank 1 --master-addr node0 \\
           --master-port 29500 --nproc-per-node 2 --run-dir /shared/runs/RUN \\
           --upload http://master:8000 --upload-token-file /secrets/token
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "node",
        help="per-node agent: start this node's ranks of a multi-node run (used by engines)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--nnodes", type=int, required=True, metavar="N", help="nodes in the run")
    p.add_argument(
        "--node-rank", type=int, required=True, metavar="R", help="this node's index, 0..N-1"
    )
    p.add_argument(
        "--master-addr",
        required=True,
        metavar="A",
        help="host of global rank 0 (node 0), reachable from every node",
    )
    p.add_argument(
        "--master-port", type=int, required=True, metavar="P", help="rendezvous TCP port on A"
    )
    p.add_argument(
        "--nproc-per-node", type=int, default=1, metavar="K", help="ranks on this node (default 1)"
    )
    p.add_argument(
        "--run-dir", type=Path, required=True, metavar="DIR", help="the prepared run directory"
    )
    p.add_argument(
        "--upload",
        metavar="URL",
        help="upload this node's ranks' events to this master as they are written",
    )
    p.add_argument(
        "--upload-token-file",
        type=Path,
        metavar="F",
        help="file holding the upload token (e.g. a mounted Secret; default "
        "$MLBENCH_UPLOAD_TOKEN). Never pass the token itself on a command line",
    )
    p.add_argument(
        "--resolve-timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="wait at most this long for the master address to resolve, retrying (headless-"
        "Service DNS lags on Kubernetes); default 120",
    )
    p.add_argument(
        "--backend",
        default="auto",
        choices=("auto", "gloo", "nccl", "mpi"),
        help="torch.distributed backend (auto: nccl with CUDA, else gloo)",
    )
    p.add_argument(
        "--threads-per-worker",
        type=int,
        metavar="T",
        help="torch threads per rank (default: CPU cores / K, at least 1)",
    )
    p.set_defaults(func=node)


def node(args: argparse.Namespace) -> int:
    from mlbench.launch.node import NodeRequest, read_token_file, run_node
    from mlbench.launch.worker import ERROR_MARKER

    def _on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    try:
        token = (
            read_token_file(args.upload_token_file)
            if args.upload_token_file
            else os.environ.get("MLBENCH_UPLOAD_TOKEN")
        )
        request = NodeRequest(
            run_dir=args.run_dir,
            nnodes=args.nnodes,
            node_rank=args.node_rank,
            master_addr=args.master_addr,
            master_port=args.master_port,
            nproc_per_node=args.nproc_per_node,
            backend=args.backend,
            threads_per_worker=args.threads_per_worker,
            upload=args.upload,
            upload_token=token,
            resolve_timeout=args.resolve_timeout,
        )
        # SIGTERM (srun --kill-on-bad-exit, a pod's deletion) and SIGINT both stop every rank
        signal.signal(signal.SIGTERM, _on_sigterm)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        outcome, _ = run_node(request)
    except MlbenchError as exc:
        print(f"{ERROR_MARKER} node {args.node_rank}: {exc}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:  # before the ranks started: nothing to stop
        print(f"{ERROR_MARKER} node {args.node_rank}: interrupted", file=sys.stderr, flush=True)
        return 130
    if outcome.state == "finished":
        print(f"node {args.node_rank}: all ranks finished", file=sys.stderr, flush=True)
        return 0
    print(f"{ERROR_MARKER} {outcome.reason}", file=sys.stderr, flush=True)
    return {"failed": 1, "cancelled": 130}[outcome.state]
