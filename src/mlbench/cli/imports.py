"""``mlbench import RUN_DIR``: upload a finished local run (result + every event) to a master.

Safe to repeat: the master ingests events idempotently and re-importing updates the run.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from mlbench.errors import MlbenchError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="upload a finished local run to a master")
    p.add_argument("run_dir", help="a run directory (holds result.json and rank-*.jsonl)")
    p.add_argument(
        "--master",
        default=os.environ.get("MLBENCH_MASTER", "http://127.0.0.1:8000"),
        help="master URL (default $MLBENCH_MASTER or http://127.0.0.1:8000)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import httpx

    from mlbench.results.summary import load_result
    from mlbench.telemetry.uploader import Uploader

    run_dir = Path(args.run_dir).expanduser()
    try:
        result = load_result(run_dir)
    except FileNotFoundError:
        raise MlbenchError(f"{run_dir} has no result.json (is the run finished?)") from None
    except ValueError as exc:
        raise MlbenchError(f"{run_dir}/result.json: {exc}") from None
    token = os.environ.get("MLBENCH_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    base = args.master.rstrip("/")
    try:
        resp = httpx.post(
            f"{base}/api/runs/import",
            json={"run_id": run_dir.name, "result": result},
            headers=headers,
            timeout=30,
        )
    except httpx.HTTPError as exc:
        raise MlbenchError(f"master {base} unreachable: {exc}") from None
    if resp.status_code >= 400:
        raise MlbenchError(f"master refused the run: HTTP {resp.status_code} {resp.text[:300]}")
    uploader = Uploader(run_dir, run_dir.name, base, int(result["world_size"]), token=token)
    try:
        if not uploader.finish(timeout=120):
            raise MlbenchError(f"upload incomplete: {uploader.last_error}")
    finally:
        uploader.close()
    print(f"imported {run_dir.name}: {uploader.sent} events sent to {base}")
    return 0
