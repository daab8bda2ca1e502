"""Loss-free upload against a real master process: live upload, master crash + restart, import."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx

from mlbench.telemetry.events import EventWriter, make_record, read_events
from mlbench.telemetry.uploader import QUARANTINE_FILE, Uploader

from ..e2e.helpers import a9a_args, cli_env, mlbench
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
        *a9a_args(
            real_data,
            runs,
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
        ),
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
            # long enough to outlast the master's 3 s outage on a fast machine (60 steps once
            # ended inside it, and "training continued while it was down" had nothing to see)
            "train.max_steps=200",
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


def _records(run_dir: Path, world_size: int) -> list[dict]:
    return [r for rank in range(world_size) for r in read_events(run_dir / f"rank-{rank}.jsonl")]


def _row(r: dict) -> tuple:
    return (r["rank"], r["seq"], r["step"], r["kind"], r["name"], r["value"])


def test_a_refused_record_is_quarantined_and_every_other_rank_uploads(
    master: Master, tmp_path: Path
) -> None:
    """One record the master refuses (a 65-character name, from a writer before the limits)
    must cost that record only: the rest of its batch, its rank and the other ranks arrive."""
    run_id = _new_run(master)
    run_dir = tmp_path / run_id
    run_dir.mkdir()
    for rank in range(2):
        writer = EventWriter(run_dir / f"rank-{rank}.jsonl", run_id, rank)
        for step in range(300):
            writer.emit("train", "loss", 1.0 / (step + 1), step=step, epoch=0.0)
            if rank == 0 and step == 123:  # the foreign line, numbered like the writer's own
                bad = make_record(run_id, 0, writer.seq, "train", "x", 1.0, step=step, epoch=0.0)
                writer._fh.write(json.dumps({**bad, "name": "m" * 65}) + "\n")  # type: ignore[union-attr]
                writer.seq += 1
        writer.close()
    uploader = Uploader(run_dir, run_id, master.url, 2, token=master.token, batch_size=100)
    start = time.monotonic()
    complete = uploader.finish(timeout=20)
    drained = time.monotonic() - start
    uploader.close()
    records = _records(run_dir, 2)
    good = sorted(_row(r) for r in records if len(r["name"]) <= 64)
    stored = master.stored(run_id)
    print(f"stored {len(stored)} of {len(records)} events, drain {drained:.2f} s")
    assert stored == good  # 600 of 601: every rank-1 event, every other rank-0 event
    assert not complete and drained < 10
    [entry] = [json.loads(x) for x in (run_dir / QUARANTINE_FILE).read_text().splitlines()]
    assert (entry["rank"], entry["seq"], entry["record"]["name"]) == (0, 124, "m" * 65)
    assert "name" in entry["reason"] and "64" in entry["reason"]
    status = uploader.status()
    assert (status.quarantined, status.pending, status.uploaded) == (1, 0, 600)


def test_probe_a_refused_record_costs_one_record_and_import_repairs_the_run(
    master: Master, real_data: Path, tmp_path: Path
) -> None:
    """Issue 12.3's probe: 2 ranks, rank 0 writes one record with a 65-character name (as a
    writer from before the limits would). Every other event of both ranks must arrive, the
    refused one is quarantined with the reason, the launcher returns promptly, and the run says
    its upload is incomplete — until ``mlbench import`` of the fixed directory completes it."""
    run_id = _new_run(master)
    runs = tmp_path / "runs"
    start = time.monotonic()
    proc = mlbench(
        "run",
        "epsilon-logreg",
        "--workers",
        "2",
        "--data-dir",
        str(real_data),
        "--algorithm",
        "tests.e2e.faulty:LongNameAtStep",
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
        "--json",
        home=tmp_path,
        MLBENCH_UPLOAD_TOKEN=master.token,
        FAULT_RANK="0",
        FAULT_STEP="5",
    )
    took = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    run_dir = runs / run_id
    records = _records(run_dir, 2)
    [bad] = [r for r in records if len(r["name"]) > 64]
    good = sorted(_row(r) for r in records if r is not bad)
    stored = master.stored(run_id)
    result = json.loads((run_dir / "result.json").read_text())
    upload = result["upload"]
    print(
        f"probe: stored {len(stored)} of {len(records)} events; launcher {took:.1f} s, "
        f"drain {upload['drain_seconds']} s"
    )
    assert stored == good and {r[0] for r in stored} == {0, 1}
    assert upload["drain_seconds"] < 10  # was the whole 120 s drain timeout
    [entry] = [json.loads(x) for x in (run_dir / QUARANTINE_FILE).read_text().splitlines()]
    assert (entry["rank"], entry["seq"]) == (0, bad["seq"]) and "64" in entry["reason"]
    assert upload["complete"] is False and upload["quarantined"] == 1 and upload["pending"] == 0
    assert "quarantine" in upload["reason"]
    assert "events not fully uploaded" in proc.stderr
    run = httpx.get(f"{master.url}/api/runs/{run_id}", headers=master.headers).json()
    assert run["upload"]["complete"] is False and run["upload"]["quarantined"] == 1
    assert run["upload"]["stored"] == len(good)
    status = mlbench(
        "status", run_id, "--master", master.url, home=tmp_path, MLBENCH_TOKEN=master.token
    )
    assert "upload incomplete" in status.stdout, status.stdout + status.stderr

    # importing as it is cannot store the refused record: it says so, and logs it only once
    again = mlbench(
        "import", str(run_dir), "--master", master.url, home=tmp_path, MLBENCH_TOKEN=master.token
    )
    assert again.returncode == 2 and "upload incomplete" in again.stderr
    assert len((run_dir / QUARANTINE_FILE).read_text().splitlines()) == 1
    assert master.stored(run_id) == good

    # repair: rename the metric in the rank file (the user's fix), import again
    path = run_dir / "rank-0.jsonl"
    path.write_text(path.read_text().replace("m" * 65, "long_metric_renamed"))
    imported = mlbench(
        "import", str(run_dir), "--master", master.url, home=tmp_path, MLBENCH_TOKEN=master.token
    )
    assert imported.returncode == 0, imported.stderr
    assert master.stored(run_id) == _expected(run_dir, 2)  # all of them, nothing twice
    run = httpx.get(f"{master.url}/api/runs/{run_id}", headers=master.headers).json()
    assert run["upload"]["complete"] is True and run["upload"]["quarantined"] == 0
    assert run["upload"]["stored"] == len(records)
    assert run["result"]["upload"]["complete"] is True
    assert json.loads((run_dir / "result.json").read_text())["upload"]["complete"] is True
