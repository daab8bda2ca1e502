"""Commands that talk to a master: ``status``, ``cancel``, ``delete``, ``download`` (and the
submission half of ``mlbench run --master``). Every one has ``--json`` for scripts.

The master is ``--master URL`` or ``$MLBENCH_MASTER`` (default http://127.0.0.1:8000); the token
is ``$MLBENCH_TOKEN``. HTTP errors become one-line errors (exit 2).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from mlbench.errors import MlbenchError

DEFAULT_MASTER = "http://127.0.0.1:8000"


def add_master_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--master",
        default=os.environ.get("MLBENCH_MASTER", DEFAULT_MASTER),
        help="master URL (default $MLBENCH_MASTER or http://127.0.0.1:8000)",
    )


def request(method: str, master: str, path: str, **kwargs: Any) -> Any:
    import httpx

    token = os.environ.get("MLBENCH_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = master.rstrip("/") + path
    try:
        resp = httpx.request(method, url, headers=headers, timeout=60, **kwargs)
    except httpx.HTTPError as exc:
        raise MlbenchError(f"master {master} unreachable: {exc}") from None
    if resp.status_code >= 400:
        try:
            detail = resp.json().get("detail")
        except ValueError:
            detail = resp.text[:300]
        if isinstance(detail, list):
            detail = "; ".join(
                f"{'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg')}" for d in detail
            )
        hint = " (set $MLBENCH_TOKEN)" if resp.status_code == 401 else ""
        raise MlbenchError(f"HTTP {resp.status_code}: {detail}{hint}")
    return resp


def register(sub: argparse._SubParsersAction) -> None:
    status = sub.add_parser("status", help="runs on a master (all, or one)")
    status.add_argument("run", nargs="?", help="run id (default: list recent runs)")
    status.add_argument("--state", help="only runs in this state")
    status.add_argument("--json", action="store_true")
    add_master_option(status)
    status.set_defaults(func=cmd_status)
    for name, helptext in (
        ("cancel", "cancel a queued or running run"),
        ("delete", "delete a run and its events"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("run", help="run id")
        p.add_argument("--json", action="store_true")
        add_master_option(p)
        p.set_defaults(func=cmd_cancel if name == "cancel" else cmd_delete)
    dl = sub.add_parser("download", help="download everything a run produced (zip)")
    dl.add_argument("run", help="run id")
    dl.add_argument("-o", "--output", help="file to write (default RUN.zip)")
    dl.add_argument("--json", action="store_true")
    add_master_option(dl)
    dl.set_defaults(func=cmd_download)


def _print_runs(runs: list[dict[str, Any]]) -> None:
    from rich.table import Table

    from mlbench.cli.output import console_for, id_column

    table = Table(
        id_column("id"),
        id_column("task"),
        "state",
        "workers",
        id_column("algorithm"),
        "goal reached",
        "time to target",
    )
    for r in runs:
        result = r.get("result") or {}
        reached = (result.get("goal") or {}).get("reached")
        ttt = (result.get("summary") or {}).get("time_to_target")
        table.add_row(
            r["id"],
            r["task"],
            r["state"] + (f" ({r['reason']})" if r.get("reason") else "") + _upload_note(r),
            str(r["workers"]),
            r["algorithm"],
            "—" if reached is None else str(reached),
            "—" if ttt is None else f"{ttt:.1f} s",
        )
    console_for().print(table)


def _upload_note(run: dict[str, Any]) -> str:
    """Said beside the state when some of the run's events are not on the master."""
    upload = run.get("upload")
    if not isinstance(upload, dict) or upload.get("complete"):
        return ""
    return f" (upload incomplete: {upload.get('stored')} events stored)"


def cmd_status(args: argparse.Namespace) -> int:
    if args.run:
        runs = [request("GET", args.master, f"/api/runs/{args.run}").json()]
    else:
        params = {"state": args.state} if args.state else {}
        runs = request("GET", args.master, "/api/runs", params=params).json()["runs"]
    if args.json:
        print(json.dumps(runs[0] if args.run else runs, indent=2))
    else:
        _print_runs(runs)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    run = request("POST", args.master, f"/api/runs/{args.run}/cancel").json()
    print(json.dumps(run, indent=2) if args.json else f"{run['id']}: {run['state']}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    request("DELETE", args.master, f"/api/runs/{args.run}")
    print(json.dumps({"deleted": args.run}) if args.json else f"{args.run}: deleted")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    resp = request("GET", args.master, f"/api/runs/{args.run}/download")
    out = Path(args.output or f"{args.run}.zip")
    out.write_bytes(resp.content)
    if args.json:
        print(json.dumps({"run": args.run, "file": str(out), "bytes": len(resp.content)}))
    else:
        print(f"{args.run}: {len(resp.content)} bytes → {out}")
    return 0


def submit(args: argparse.Namespace, overrides: list[str]) -> int:
    """``mlbench run ... --master URL``: queue the run(s) on the master instead of running here."""
    body: dict[str, Any] = {
        "task": args.task,
        "workers": args.workers,
        "backend": args.backend,
        "algorithm": args.algorithm or "allreduce",
        "goal": args.goal or "full",
        "overrides": [o for o in overrides if not o.startswith(("goal=", "algorithm.name="))],
    }
    runs = request("POST", args.master, "/api/runs", json=body).json()["runs"]
    if args.json:
        print(json.dumps(runs, indent=2))
    else:
        for r in runs:
            print(f"{r['id']}: {r['state']} on {args.master}")
    return 0
