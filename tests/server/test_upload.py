"""Loss-free upload against a real master process: live upload, master crash + restart, import."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from mlbench.telemetry.events import read_events

from ..e2e.helpers import cli_env, mlbench
from .master import Master


def _expected(run_dir: Path, world_size: int) -> list[tuple]:
    rows = []
    for rank in range(world_size):
        for r in read_events(run_dir / f"rank-{rank}.jsonl"):
            rows.append((r["rank"], r["seq"], r["step"], r["kind"], r["name"], r["value"]))
    return sorted(rows)


def _new_run(master: Master, task: str = "epsilon-logreg") -> str:
    resp = httpx.post(
        f"{master.url}/api/runs", json={"task": task, "workers": 2}, headers=master.headers
    )
    assert resp.status_code == 201, resp.text
    return str(resp.json()["runs"][0]["id"])


def test_live_upload_stores_exactly_the_worker_files(
    master: Master, real_data: Path, tmp_path: Path
) -> None:
    run_id = _new_run(master)
    runs = tmp_path / "runs"
    proc = mlbench(
        "run",
        "epsilon-logreg",
        "--workers",
        "2",
        "--data-dir",
        str(real_data),
        "--set",
        "data.dataset=a9a",
        "--set",
        "train.max_steps=60",
        "--set",
        "train.log_every_steps=1",
        "--set",
        "train.log_every_seconds=0",
        "--run-id",
        run_id,
        "--upload",
        master.url,
        "--runs-dir",
        str(runs),
        home=tmp_path,
        MLBENCH_UPLOAD_TOKEN=master.token,
    )
    assert proc.returncode == 0, proc.stderr
    expected = _expected(runs / run_id, 2)
    assert len(expected) > 800
    assert master.stored(run_id) == expected


def test_master_killed_and_restarted_mid_run_loses_and_duplicates_nothing(
    master: Master, real_data: Path, tmp_path: Path
) -> None:
    run_id = _new_run(master, "cifar10-resnet20")
    runs = tmp_path / "runs"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlbench.cli.main",
            "run",
            "cifar10-resnet20",
            "--workers",
            "2",
            "--data-dir",
            str(real_data),
            "--set",
            "data.batch_size=16",
            "--set",
            "train.max_steps=60",
            "--set",
            "train.log_every_steps=1",
            "--set",
            "train.log_every_seconds=0",
            "--set",
            "data.val_samples=64",
            "--run-id",
            run_id,
            "--upload",
            master.url,
            "--runs-dir",
            str(runs),
        ],
        env=cli_env(tmp_path, MLBENCH_UPLOAD_TOKEN=master.token),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not master.stored(run_id):
        assert time.monotonic() < deadline and proc.poll() is None, "nothing was uploaded"
        time.sleep(0.2)
    master.kill()  # mid-run: the uploader now fails and backs off; training goes on
    time.sleep(3)
    events_while_down = len(_expected(runs / run_id, 2))
    master.start()
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    expected = _expected(runs / run_id, 2)
    assert len(expected) > events_while_down  # training really continued while it was down
    stored = master.stored(run_id)
    assert len(stored) == len(set(stored)) == len(expected)
    assert stored == expected


def test_import_a_finished_local_run_twice(master: Master, real_data: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    proc = mlbench(
        "run",
        "epsilon-logreg",
        "--workers",
        "2",
        "--data-dir",
        str(real_data),
        "--set",
        "data.dataset=a9a",
        "--set",
        "train.max_steps=20",
        "--runs-dir",
        str(runs),
        home=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    [run_dir] = list(runs.iterdir())
    for _ in range(2):  # re-importing is safe
        imported = mlbench(
            "import",
            str(run_dir),
            "--master",
            master.url,
            home=tmp_path,
            MLBENCH_TOKEN=master.token,
        )
        assert imported.returncode == 0, imported.stderr
    run = httpx.get(f"{master.url}/api/runs/{run_dir.name}", headers=master.headers).json()
    assert run["state"] == "finished" and run["workers"] == 2
    assert run["result"]["summary"]["steps"] == 20
    assert master.stored(run_dir.name) == _expected(run_dir, 2)
    missing = mlbench("import", str(tmp_path), "--master", master.url, home=tmp_path)
    assert missing.returncode == 2 and "no result.json" in missing.stderr
