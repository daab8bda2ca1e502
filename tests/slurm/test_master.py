"""The master scheduling runs onto a real Slurm (``mlbench serve --executor slurm``): the run is
a Slurm job, its events reach the master while the job runs, and it ends finished with the
result rank 0 wrote on the shared filesystem — or cancelled when cancelled through the API."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlbench.launch.slurm import queue_state, read_job_id
from mlbench.telemetry.events import read_events

from ..server.master import Master
from ..support.slurm import SlurmCluster

A9A = ["data.dataset=a9a", "train.log_every_steps=5"]


@pytest.fixture
def slurm_master(slurm: SlurmCluster, tmp_path: Path, real_data: Path) -> Iterator[Master]:
    m = Master(
        tmp_path / "home",
        "--executor",
        "slurm",
        "--capacity-workers",
        "2",
        "--data-dir",
        str(real_data),
    )
    m.start()
    yield m
    if m.proc and m.proc.poll() is None:
        m.proc.terminate()
        m.proc.wait(timeout=15)


def _run(m: Master, run_id: str) -> dict[str, Any]:
    return dict(httpx.get(f"{m.url}/api/runs/{run_id}", headers=m.headers).json())


def test_the_master_runs_a_slurm_job_live(slurm_master: Master) -> None:
    m = slurm_master
    resp = httpx.post(
        f"{m.url}/api/runs",
        # trains ~8 s past its goal, long enough to see events arrive while the job runs
        json={
            "task": "epsilon-logreg",
            "workers": 2,
            "goal": "light",
            "overrides": [*A9A, "train.stop_at_goal=false", "train.time_limit=8"],
        },
        headers=m.headers,
    )
    assert resp.status_code == 201, resp.text
    run_id = resp.json()["runs"][0]["id"]
    run_dir = m.home / "runs" / run_id
    live_events, job_seen = 0, False
    deadline = time.monotonic() + 120
    while (run := _run(m, run_id))["state"] in ("queued", "running"):
        assert time.monotonic() < deadline, f"run never ended: {run}"
        job_id = read_job_id(run_dir) if run_dir.exists() else None
        if job_id is not None and queue_state(job_id) == "RUNNING":
            job_seen = True
            live_events = max(live_events, len(m.stored(run_id)))
        time.sleep(0.5)
    assert run["state"] == "finished", run["reason"]
    assert job_seen, "the run never showed up as a running Slurm job"
    assert live_events > 0, "no event reached the master while the job ran"
    assert run["result"]["world_size"] == 2 and run["result"]["goal"]["reached"] is True
    # and every event arrived by the end (the last poll of a RUNNING job may already have seen
    # them all: the job stays RUNNING until its script exits, after the final upload)
    written = sum(len(read_events(p)) for p in run_dir.glob("rank-*.jsonl"))
    assert len(m.stored(run_id)) == written >= live_events
    assert (run_dir / "result.json").exists() and (run_dir / "slurm.sbatch").exists()


def test_cancelling_through_the_api_cancels_the_job(slurm_master: Master) -> None:
    m = slurm_master
    resp = httpx.post(
        f"{m.url}/api/runs",
        json={"task": "epsilon-logreg", "workers": 2, "overrides": [*A9A, "train.max_epochs=500"]},
        headers=m.headers,
    )
    run_id = resp.json()["runs"][0]["id"]
    run_dir = m.home / "runs" / run_id
    deadline = time.monotonic() + 90
    while not (run_dir.exists() and (job_id := read_job_id(run_dir))) or (
        queue_state(job_id) != "RUNNING"
    ):
        assert time.monotonic() < deadline, "the job never ran"
        time.sleep(0.3)
    cancel = httpx.post(f"{m.url}/api/runs/{run_id}/cancel", headers=m.headers)
    assert cancel.json()["state"] == "cancelled"
    # its own time budget: the wait for RUNNING above may have used most of the first one
    deadline = time.monotonic() + 90
    while (run := _run(m, run_id))["result"] is None:
        assert time.monotonic() < deadline, "the launcher never recorded the cancel"
        time.sleep(0.3)
    assert run["state"] == "cancelled" and run["result"]["state"] == "cancelled"
    assert queue_state(job_id) is None
