"""``--fault master-down``: the run's upload to a real master is cut for a window; once the
master is reachable again every event arrives, none twice (docs/faults.md)."""

from __future__ import annotations

from pathlib import Path

import httpx

from mlbench.telemetry.events import read_events

from ..e2e.helpers import a9a_args, mlbench, read_result
from .master import Master


def test_master_down_loses_and_duplicates_no_event(
    master: Master, real_data: Path, tmp_path: Path
) -> None:
    resp = httpx.post(
        f"{master.url}/api/runs",
        json={"task": "epsilon-logreg", "workers": 2},
        headers=master.headers,
    )
    assert resp.status_code == 201, resp.text
    run_id = str(resp.json()["runs"][0]["id"])
    runs = tmp_path / "runs"
    proc = mlbench(
        *a9a_args(
            real_data,
            runs,
            *("--set", "train.max_steps=150", "--set", "train.log_every_steps=1"),
            *("--set", "train.log_every_seconds=0", "--run-id", run_id, "--upload", master.url),
            # down from before the first event until after the training: every event waits
            *("--fault", "master-down:after=0.5s,for=6s"),
        ),
        home=tmp_path,
        timeout=180,
        MLBENCH_UPLOAD_TOKEN=master.token,
    )
    assert proc.returncode == 0, proc.stderr
    run_dir = runs / run_id
    result = read_result(run_dir)
    upload = result["upload"]
    assert upload["complete"] and upload["pending"] == 0, upload
    assert upload["refused_by_fault"] > 0  # the outage really cut requests
    expected = sorted(
        (r["rank"], r["seq"], r["step"], r["kind"], r["name"], r["value"])
        for rank in (0, 1)
        for r in read_events(run_dir / f"rank-{rank}.jsonl")
    )
    assert len(expected) > 1000
    stored = master.stored(run_id)
    assert len(stored) == len(set(stored))  # nothing twice
    assert stored == expected  # nothing lost
    assert upload["uploaded"] == len(expected)
    assert "fault injected: master-down:after=0.5s,for=6s" in result["official_differences"]
