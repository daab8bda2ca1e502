"""The MLPerf log built from a run: its lines, values and times, with known inputs.

The run directory here is tiny and hand-made in the real formats (result.json, rank-0.jsonl);
real runs are exported and checked in tests/e2e/test_mllog_history.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlbench.errors import MlbenchError
from mlbench.results import mllog
from mlbench.results.summary import build_result, write_result
from mlbench.telemetry.events import make_record

T0 = 1_700_000_000.0


def _run_dir(
    tmp_path: Path,
    *,
    reached: bool = True,
    official: bool = False,
    batch_size: int = 50,
    resolved_batch: int | None = None,
) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    events = [
        ("resource", "cpu_percent", 0.0, 0, 0.0, 0.0),
        ("event", "steps_per_epoch", 10, 0, 0.0, 2.0),
        ("event", "planned_steps", 20, 0, 0.0, 2.0),
    ]
    if resolved_batch is not None:  # what a task resolved on the device (1b: 0 = auto)
        events.append(("event", "batch_size", resolved_batch, 0, 0.0, 2.0))
    events += [
        ("event", "start", 0, 0, 0.0, 2.0),
        ("train", "loss", 0.7, 10, 1.0, 3.0),
        ("event", "epoch_end", 1, 10, 1.0, 3.5),
        ("phase", "eval", 0.5, 10, 1.0, 4.0),
        ("val", "accuracy", 70.0, 10, 1.0, 4.0),
        ("train", "loss", 0.5, 20, 2.0, 5.0),
        ("event", "epoch_end", 2, 20, 2.0, 5.5),
        ("phase", "eval", 0.5, 20, 2.0, 6.0),
        ("val", "accuracy", 85.0, 20, 2.0, 6.0),
    ]
    if reached:
        events.append(("event", "goal_reached", 85.0, 20, 2.0, 6.0))
    events.append(("event", "end", 1, 20, 2.0, 6.1))
    with (run / "rank-0.jsonl").open("w") as f:
        for seq, (kind, name, value, step, epoch, t) in enumerate(events):
            rec = make_record("r1", 0, seq, kind, name, value, step=step, epoch=epoch, when=T0 + t)
            f.write(json.dumps(rec) + "\n")
    (run / "run.json").write_text(json.dumps({"created": T0 - 1.0}))
    config = {
        "task": "epsilon-logreg",
        "seed": 7,
        "goal": "light",
        "train": {"accumulate": 1},
        "data": {"batch_size": batch_size},
        "optim": {"lr": 4.0, "momentum": 0.0},
    }
    rank = {
        "rank": 0,
        "steps": 20,
        "samples": 1000,
        "train_time": 3.0,
        "goal_reached": reached,
        "time_to_target": 3.0 if reached else None,
        "final_metrics": {"samples": 500.0},
    }
    result = build_result(
        run_id="r1",
        task="epsilon-logreg",
        state="finished",
        config=config,
        official=official,
        official_differences=[] if official else ["data.dataset"],
        environment={"cpu_model": "CPU X", "seed": 7},
        world_size=2,
        backend="gloo",
        algorithm="allreduce",
        goal={"metric": "accuracy", "goal": "light", "threshold": 80.0, "mode": "max"},
        ranks=[rank, {**rank, "rank": 1}],
    )
    write_result(run, result)
    return run


def _parse(lines: list[str]) -> list[dict]:
    assert all(line.startswith(":::MLLOG {") for line in lines)
    return [json.loads(line[len(":::MLLOG ") :]) for line in lines]


def test_lines_keys_values_and_times(tmp_path: Path) -> None:
    recs = _parse(mllog.build_lines(_run_dir(tmp_path)))
    by_key = {r["key"]: r for r in recs}
    assert [r["key"] for r in recs if r["key"].endswith(("_start", "_stop"))] == [
        "init_start", "init_stop", "run_start",
        "epoch_start", "epoch_stop", "eval_start", "eval_stop",
        "epoch_start", "epoch_stop", "eval_start", "eval_stop", "run_stop",
    ]  # fmt: skip
    assert by_key["submission_benchmark"]["value"] == "epsilon-logreg"  # no MLPerf counterpart
    assert by_key["submission_division"]["value"] == "open"  # not official
    assert by_key["seed"]["value"] == 7
    assert by_key["global_batch_size"]["value"] == 100  # 50 per rank × 2 ranks
    assert by_key["train_samples"]["value"] == 1000  # 10 steps/epoch × 100 samples/step
    assert by_key["eval_samples"]["value"] == 500
    assert by_key["init_start"]["time_ms"] == (T0 - 1.0) * 1000  # run.json created
    assert by_key["run_start"]["time_ms"] == (T0 + 2.0) * 1000  # the loop's start event
    assert by_key["run_stop"]["time_ms"] == (T0 + 6.0) * 1000  # goal reached
    assert by_key["run_stop"]["metadata"]["status"] == "success"
    assert by_key["run_stop"]["event_type"] == "INTERVAL_END"
    accs = [r for r in recs if r["key"] == "eval_accuracy"]
    assert [(a["value"], a["metadata"]["epoch_num"]) for a in accs] == [(0.70, 1.0), (0.85, 2.0)]
    evals = [r for r in recs if r["key"] == "eval_start"]
    assert evals[0]["time_ms"] == (T0 + 3.5) * 1000  # eval phase end 4.0 − 0.5 s
    assert [r["metadata"]["epoch_num"] for r in recs if r["key"] == "epoch_start"] == [1, 2]
    assert by_key["epoch_start"]["time_ms"] == (T0 + 4.0) * 1000  # epoch 2 starts after eval 1
    # provenance: the event-file line the MLPerf line came from
    assert accs[1]["metadata"]["file"] == "rank-0.jsonl" and accs[1]["metadata"]["lineno"] == 12
    times = [r["time_ms"] for r in recs]
    assert times == sorted(times)


def test_missed_target_is_aborted_and_fails_nothing_else(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, reached=False)
    recs = _parse(mllog.build_lines(run))
    stop = next(r for r in recs if r["key"] == "run_stop")
    assert stop["metadata"]["status"] == "aborted" and stop["time_ms"] == (T0 + 6.1) * 1000


def test_closed_division_needs_an_official_run(tmp_path: Path) -> None:
    with pytest.raises(MlbenchError, match=r"data\.dataset"):
        mllog.build_lines(_run_dir(tmp_path), division="closed")


def test_checker_passes_the_export_and_catches_a_broken_log(tmp_path: Path) -> None:
    log = mllog.export(_run_dir(tmp_path))
    assert mllog.ruleset_for(log) == (mllog.GENERIC_RULESET, None)
    ok, messages = mllog.check(log)
    assert ok, messages
    broken = tmp_path / "broken.log"
    broken.write_text(
        "".join(li + "\n" for li in log.read_text().splitlines() if "init_stop" not in li)
    )
    ok, messages = mllog.check(broken)
    assert not ok and "init_stop" in messages


def test_another_mlperf_name_is_checked_against_its_rules(tmp_path: Path) -> None:
    """``--benchmark resnet``: open-division ResNet rules = its quality target, top-1 ≥ 0.759:
    the run's 0.85 passes; a run whose best is 0.70 would not be a ResNet result."""
    log = mllog.export(_run_dir(tmp_path), benchmark="resnet")
    assert mllog.ruleset_for(log) == ("0.7.0", "resnet")
    assert mllog.check(log)[0]
    low = tmp_path / "low.log"
    low.write_text(log.read_text().replace('"value": 0.85', '"value": 0.7'))
    ok, messages = mllog.check(low)
    assert not ok and "0.7590" in messages


def test_global_batch_from_the_batch_size_the_task_resolved(tmp_path: Path) -> None:
    """1b's data.batch_size 0 means "auto" (256 on a GPU, 32 on a CPU): the log's global batch
    is the resolved size the run recorded × 2 workers, not 0."""
    run = _run_dir(tmp_path, batch_size=0, resolved_batch=32)
    by_key = {r["key"]: r for r in _parse(mllog.build_lines(run))}
    assert by_key["global_batch_size"]["value"] == 64
