"""End-to-end: ``mlbench run`` on 2 real worker processes over the real datasets."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from mlbench.launch.local import free_port
from mlbench.telemetry.events import KINDS, read_events
from mlbench.telemetry.resources import CPU_METRICS, RESOURCE_UNITS
from mlbench.train.timer import PHASES, STEP_PHASES

from .helpers import a9a_args, cli_env, leftover_workers, mlbench, only_run_dir, read_result


def _check_events(run_dir: Path, world_size: int, run_id: str) -> dict[int, list[dict]]:
    by_rank = {}
    for rank in range(world_size):
        records = read_events(run_dir / f"rank-{rank}.jsonl")
        assert records, f"rank {rank} wrote no events"
        assert [r["seq"] for r in records] == list(range(len(records)))
        for r in records:
            assert r["rank"] == rank and r["run_id"] == run_id
            assert r["kind"] in KINDS
            assert isinstance(r["value"], int | float) and not isinstance(r["value"], bool)
            assert str(rank) not in r["name"].split("_")  # rank is a field, not in the name
        by_rank[rank] = records
    return by_rank


def _phase_sums(records: list[dict]) -> tuple[dict[str, float], float]:
    phases: dict[str, float] = defaultdict(float)
    step_time = 0.0
    for r in records:
        if r["kind"] == "phase":
            phases[r["name"]] += r["value"]
        elif r["kind"] == "train" and r["name"] == "train_time":
            step_time += r["value"]
    return phases, step_time


def _check_resources(records: list[dict], final_step: int) -> None:
    """The worker's resource sampler: a sample at start, one at stop, CPU metrics only."""
    resource = [r for r in records if r["kind"] == "resource"]
    by_name: dict[str, list[dict]] = defaultdict(list)
    for r in resource:
        by_name[r["name"]].append(r)
        assert r.get("unit") == RESOURCE_UNITS[r["name"]]
    assert set(by_name) == set(CPU_METRICS)  # gpu_* only with a CUDA device
    samples = [len(v) for v in by_name.values()]
    assert min(samples) == max(samples) >= 2, samples
    assert by_name["cpu_percent"][0]["step"] == 0  # started before training
    assert by_name["cpu_percent"][-1]["step"] == final_step  # stopped after it, before exit
    assert resource[-1]["seq"] > max(r["seq"] for r in records if r["kind"] != "resource")
    assert [r["step"] for r in resource] == sorted(r["step"] for r in resource)
    assert all(r["value"] >= 0 for r in by_name["cpu_percent"])
    assert all(r["value"] > 50 * 2**20 for r in by_name["memory_rss"])  # torch is loaded
    assert all(r["value"] >= 1 for r in by_name["threads"])
    for name in ("net_sent", "net_recv"):  # host-wide, cumulative, loopback (gloo) included
        values = [r["value"] for r in by_name[name]]
        assert values[0] == 0 and values == sorted(values) and values[-1] > 0, (name, values)


def test_epsilon_logreg_a9a_two_workers(real_data: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    proc = mlbench(
        *a9a_args(
            real_data,
            runs,
            "--set",
            "train.max_steps=40",
            "--set",
            "train.eval_every_steps=20",
            "--set",
            "train.log_every_steps=5",
            "--set",
            "train.log_every_seconds=0",
            "--set",
            "train.stop_at_goal=false",
            "--set",
            "train.resource_every_seconds=0.2",
        ),
        home=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    run_dir = only_run_dir(runs)
    result = read_result(run_dir)
    assert result["schema_version"] == 1
    assert result["state"] == "finished" and result["reason"] is None
    assert result["task"] == "epsilon-logreg"
    assert result["world_size"] == 2 and result["backend"] == "gloo"
    assert result["algorithm"] == "allreduce"
    # a9a is not the spec's dataset: automatically non-official, and the reason names the key
    assert result["official"] is False
    assert "data.dataset" in result["official_differences"]
    assert result["config"]["data"]["dataset"] == "a9a"
    assert json.loads((run_dir / "config.json").read_text())["data"]["dataset"] == "a9a"
    env = result["environment"]
    assert env["packages"]["torch"] and env["hostname"] and env["cpu_model"] and env["seed"] == 42
    summary = result["summary"]
    assert summary["steps"] == 40 and summary["stop_reason"] == "max_steps"
    assert summary["samples"] == 40 * 100 * 2
    assert 0 < summary["train_time"] <= summary["wall_time"]
    assert summary["throughput"] == pytest.approx(summary["samples"] / summary["train_time"])
    assert 0 <= summary["final_metrics"]["accuracy"] <= 100
    assert summary["final_metrics"]["samples"] == 16281  # the whole a9a.t, across both ranks
    # model averaging of 123 fp32 weights after each of 40 steps, on each of 2 ranks
    assert summary["bytes_sent"] == 40 * 123 * 4 * 2
    assert set(summary["phases_slowest"]) == set(PHASES)
    assert len(result["ranks"]) == 2

    by_rank = _check_events(run_dir, 2, run_dir.name)
    for rank, records in by_rank.items():
        phases, step_time = _phase_sums(records)
        in_steps = sum(phases[p] for p in STEP_PHASES)
        assert in_steps == pytest.approx(step_time, rel=0.05), (rank, phases, step_time)
        rank_summary = result["ranks"][rank]
        assert sum(rank_summary["phases"][p] for p in STEP_PHASES) == pytest.approx(
            rank_summary["train_time"], rel=0.05
        )
        vals = [r for r in records if r["kind"] == "val" and r["name"] == "accuracy"]
        assert [v["step"] for v in vals] == [20, 40]
        _check_resources(records, final_step=40)
        out = (run_dir / f"rank-{rank}.stdout").read_text()
        assert out.startswith("step ") and " loss " in out  # a progress line per window
        assert (run_dir / f"rank-{rank}.stderr").exists()
    assert "finished" in proc.stdout and "time to target" in proc.stdout


def test_epsilon_logreg_a9a_reaches_light_goal(real_data: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    proc = mlbench(
        "run",
        "epsilon-logreg",
        "--workers",
        "2",
        "--goal",
        "light",
        "--data-dir",
        str(real_data),
        "--set",
        "data.dataset=a9a",
        "--set",
        "train.log_every_seconds=0",  # a window every 10 steps: many windows, few lines
        "--runs-dir",
        str(runs),
        "--json",
        home=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["goal"] == {
        "metric": "accuracy",
        "goal": "light",
        "threshold": 80.0,
        "mode": "max",
        "reached": True,
    }
    s = result["summary"]
    assert s["stop_reason"] == "goal_reached"
    assert s["final_metrics"]["accuracy"] >= 80.0
    assert 0 < s["time_to_target"] <= s["train_time"] + 1e-9
    assert s["wall_time_to_target"] >= s["time_to_target"]
    records = read_events(only_run_dir(runs) / "rank-0.jsonl")
    assert [r for r in records if r["name"] == "goal_reached"]
    # every log window is in the events; the human progress line is rate-limited to one a
    # second plus the last (this run's ~16 windows take well under a few seconds)
    windows = [r for r in records if r["kind"] == "train" and r["name"] == "loss"]
    lines = (only_run_dir(runs) / "rank-0.stdout").read_text().splitlines()
    assert len(windows) >= 10
    assert 2 <= len(lines) <= 2 + s["wall_time"], lines
    assert lines[-1].startswith(f"step {s['steps']} ")


def test_cifar10_resnet20_two_workers(real_data: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    proc = mlbench(
        "run",
        "cifar10-resnet20",
        "--workers",
        "2",
        "--goal",
        "light",
        "--data-dir",
        str(real_data),
        "--set",
        "train.max_steps=12",
        "--set",
        "data.batch_size=32",
        "--set",
        "data.val_samples=512",
        "--set",
        "train.eval_every_steps=6",
        "--set",
        "train.log_every_steps=3",
        "--runs-dir",
        str(runs),
        home=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    run_dir = only_run_dir(runs)
    result = read_result(run_dir)
    assert result["state"] == "finished" and result["world_size"] == 2
    assert set(result["official_differences"]) == {
        "data.batch_size",
        "data.val_samples",
        "train.eval_every_steps",
    }
    s = result["summary"]
    assert s["steps"] == 12 and s["samples"] == 12 * 32 * 2
    assert s["final_metrics"]["samples"] == 512
    assert 0 <= s["final_metrics"]["top1"] <= s["final_metrics"]["top5"] <= 100
    # ResNet-20's gradients: 272,474 fp32 values all-reduced per step per rank
    assert s["bytes_sent"] == 12 * 272474 * 4 * 2
    by_rank = _check_events(run_dir, 2, run_dir.name)
    for records in by_rank.values():
        phases, step_time = _phase_sums(records)
        assert sum(phases[p] for p in STEP_PHASES) == pytest.approx(step_time, rel=0.03)
        assert phases["forward"] > 0 and phases["backward"] > 0 and phases["communication"] > 0
        assert {r["name"] for r in records if r["kind"] == "val"} >= {"top1", "top5", "loss"}


def test_time_limit_stops_all_ranks_together(real_data: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    proc = mlbench(
        "run",
        "cifar10-resnet20",
        "--workers",
        "2",
        "--data-dir",
        str(real_data),
        "--time-limit",
        "3",
        "--set",
        "data.batch_size=16",
        "--set",
        "data.val_samples=64",
        "--runs-dir",
        str(runs),
        home=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    result = read_result(only_run_dir(runs))
    s = result["summary"]
    assert s["stop_reason"] == "time_limit"
    assert 3.0 <= s["wall_time"] < 10.0
    assert result["ranks"][0]["steps"] == result["ranks"][1]["steps"] > 0


def _assert_failed_cleanly(proc: subprocess.CompletedProcess[str], runs: Path, needle: str) -> None:
    assert proc.returncode == 1, proc.stderr
    run_dir = only_run_dir(runs)
    result = read_result(run_dir)
    assert result["state"] == "failed"
    assert needle in result["reason"], result["reason"]
    assert not leftover_workers(run_dir)
    assert result["summary"]["steps"] >= 2  # partial progress is kept from the event files


@pytest.mark.parametrize(
    ("plugin", "needle"),
    [("RaiseAtStep", "rank 1: RuntimeError: injected failure"), ("KillAtStep", "SIGKILL")],
)
def test_a_failing_rank_stops_the_run(
    real_data: Path, tmp_path: Path, plugin: str, needle: str
) -> None:
    runs = tmp_path / "runs"
    start = time.monotonic()
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
        "train.log_every_steps=1",
        "--algorithm",
        f"tests.e2e.faulty:{plugin}",
        "--runs-dir",
        str(runs),
        home=tmp_path,
        FAULT_RANK="1",
        FAULT_STEP="3",
    )
    assert time.monotonic() - start < 60
    _assert_failed_cleanly(proc, runs, needle)


def test_ctrl_c_stops_every_rank(real_data: Path, tmp_path: Path) -> None:
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
            "train.log_every_steps=1",
            "--set",
            "data.batch_size=16",
            "--runs-dir",
            str(runs),
        ],
        env=cli_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        dirs = list(runs.glob("*/rank-1.jsonl")) if runs.exists() else []
        if dirs and any(r["kind"] == "train" for r in read_events(dirs[0])):
            break
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("training never started")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    run_dir = only_run_dir(runs)
    result = read_result(run_dir)
    assert result["state"] == "cancelled" and "interrupted" in result["reason"]
    assert not leftover_workers(run_dir)
    assert "Traceback" not in err


def test_torchrun_starts_the_same_worker(real_data: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "torchrun-run"
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run(
        [
            str(torchrun),
            "--nproc-per-node",
            "2",
            "--master-port",
            str(free_port()),
            "-m",
            "mlbench.launch.worker",
            "--run-dir",
            str(run_dir),
            "--task",
            "epsilon-logreg",
            "--set",
            f"data.dir={real_data}",
            "--set",
            "data.dataset=a9a",
            "--set",
            "train.max_steps=10",
            "--backend",
            "gloo",
        ],
        env=cli_env(tmp_path, OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = read_result(run_dir)
    assert result["state"] == "finished" and result["world_size"] == 2
    assert result["summary"]["steps"] == 10
    assert (run_dir / "config.json").exists()
    _check_events(run_dir, 2, run_dir.name)
    assert math.isfinite(result["summary"]["train_time"])
