"""``mlbench sweep --master URL``: every planned run submitted to a master, then followed.

Each run is one ``POST /api/runs`` (its own worker count, scheme, swept values and seed) carrying
the sweep id, which the master stores; the sweep is followed with ``GET /api/runs?sweep=ID``.
When a run ends, its result.json is copied to ``SWEEP_DIR/runs/<run_id>/`` beside a run.json with
its sweep membership, so a report reads a master's sweep exactly like a local one.

Ctrl-C detaches: the runs go on on the master (``mlbench cancel RUN`` stops one), sweep.json is
saved, and ``mlbench sweep --resume ID`` follows them again — it resubmits only the runs that
failed or were cancelled, never one that is queued or running.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from pathlib import Path
from types import FrameType
from typing import Any

from mlbench.cli.client import request

#: seconds between two looks at the master's runs (``MLBENCH_SWEEP_POLL`` for tests)
POLL_SECONDS = float(os.environ.get("MLBENCH_SWEEP_POLL", "2"))
TERMINAL = ("finished", "failed", "cancelled")


def _body(args: argparse.Namespace, e: dict[str, Any], common: list[str]) -> dict[str, Any]:
    from mlbench.cli.sweep import run_overrides

    overrides = [
        o for o in run_overrides(common, e, False) if not o.startswith(("goal=", "algorithm.name="))
    ]
    return {
        "task": args.task,
        "workers": e["workers"],
        "backend": args.backend,
        "algorithm": e["algorithm"],
        "goal": args.goal or "full",
        "overrides": overrides,
        "sweep_id": args.sweep_id_resolved,
    }


def _sweep_runs(master: str, sweep_id: str) -> dict[str, dict[str, Any]]:
    """Every run the master holds for this sweep, by id (paged)."""
    out: dict[str, dict[str, Any]] = {}
    offset = 0
    while True:
        params: dict[str, Any] = {"sweep": sweep_id, "limit": 1000, "offset": offset}
        page = request("GET", master, "/api/runs", params=params).json()["runs"]
        out.update((r["id"], r) for r in page)
        if len(page) < 1000:
            return out
        offset += len(page)


def _keep_result(sweep_dir: Path, data: dict[str, Any], e: dict[str, Any], run: Any) -> None:
    """The ended run's result.json (and run.json with its sweep membership) under the sweep."""
    run_dir = Path(data["runs_dir"]) / run["id"]
    run_dir.mkdir(parents=True, exist_ok=True)
    if run.get("result") is not None:
        (run_dir / "result.json").write_text(json.dumps(run["result"], indent=2) + "\n")
    launch = {
        "sweep": {"id": data["sweep_id"], "point": e["point"], "repeat": e["repeat"]},
        "master": data.get("master"),
        "run": {k: v for k, v in run.items() if k != "result"},
    }
    (run_dir / "run.json").write_text(json.dumps(launch, indent=2) + "\n")
    e["run_dir"] = str(run_dir.resolve())


def follow_on_master(
    args: argparse.Namespace, sweep_dir: Path, data: dict[str, Any], common: list[str]
) -> int:
    from rich.console import Console

    from mlbench.cli.sweep_view import SweepView
    from mlbench.launch import sweep as sw

    console = Console(stderr=True)
    args.sweep_id_resolved = data["sweep_id"]
    master = args.master
    known = _sweep_runs(master, data["sweep_id"])
    todo = []
    for e in data["points"]:
        if e["state"] == "finished":
            continue
        run = known.get(e.get("run_id") or "")
        if e["state"] == "pending" and run is not None and run["state"] not in TERMINAL:
            todo.append(e)  # submitted before, still queued or running there: follow it
            continue
        sw.retry(e)
        todo.append(e)
    sw.write(sweep_dir, data)
    console.print(
        f"sweep {data['sweep_id']}: {len(todo)} of {len(data['points'])} runs on {master}"
    )

    def _on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with SweepView(data, console) as view:
            for e in todo:
                if e["run_id"] is None:
                    run = request("POST", master, "/api/runs", json=_body(args, e, common))
                    e["run_id"] = run.json()["runs"][0]["id"]
                    sw.write(sweep_dir, data)
            _follow(master, sweep_dir, data, todo, view)
    except KeyboardInterrupt:
        sw.write(sweep_dir, data)
        console.print(
            f"detached: the runs go on on {master}; follow them again with "
            f"mlbench sweep --resume {data['sweep_id']}"
            + (f" --sweeps-dir {sweep_dir.parent}" if args.sweeps_dir else "")
        )
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    sw.write(sweep_dir, data)
    return 1 if any(e["state"] == "failed" for e in data["points"]) else 0


def _follow(
    master: str, sweep_dir: Path, data: dict[str, Any], todo: list[dict[str, Any]], view: Any
) -> None:
    from mlbench.launch import sweep as sw

    waiting = list(todo)
    while waiting:
        runs = _sweep_runs(master, data["sweep_id"])
        for e in list(waiting):
            run = runs.get(e["run_id"])
            if run is None:
                e.update(state="failed", reason=f"run {e['run_id']} is gone from the master")
            elif run["state"] in TERMINAL:
                e.update(state=run["state"], reason=run.get("reason"))
                _keep_result(sweep_dir, data, e, run)
            else:
                view.set_state(e, run["state"])
                continue
            waiting.remove(e)
            sw.write(sweep_dir, data)
            view.ended(e)
        view.refresh()
        if waiting:
            time.sleep(POLL_SECONDS)
