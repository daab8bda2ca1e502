"""``mlbench import RUN_DIR``: upload a finished local run (result + every event) to a master.

Safe to repeat: the master ingests events idempotently and re-importing updates the run. That is
also how a partial upload is completed: a run whose launcher could not upload everything (the
master was down, or refused records — quarantined in upload-quarantine.jsonl) is imported
again, every event file is re-sent, the master adds the events it lacks, and the run's upload is
marked complete once every record is stored — on the master and in result.json. A record the
master still refuses is quarantined again and the import says so (exit code 2): fix or remove
its line in ``rank-R.jsonl`` and import once more.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

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

    from mlbench.results.summary import load_result, write_result
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
        uploader.finish(timeout=120)
        upload = _report(uploader, uploader.status())
    finally:
        uploader.close()
    write_result(run_dir, {**result, "upload": upload})
    if not upload["complete"]:
        raise MlbenchError(f"upload incomplete: {upload['reason']}")
    print(f"imported {run_dir.name}: {uploader.sent} events sent to {base}; upload complete")
    return 0


def _report(uploader: Any, status: Any) -> dict[str, Any]:
    """Tell the master how the upload ended; its answer (checked against what it stores) is
    what result.json records. When it cannot be told, the uploader's own view is recorded."""
    from mlbench.telemetry.uploader import UploadError

    try:
        verdict: dict[str, Any] = uploader.report(status)
    except UploadError as exc:
        upload: dict[str, Any] = status.to_dict()
        return {**upload, "complete": False, "reason": upload["reason"] or str(exc)}
    return verdict
