"""mlbench.results: run-level aggregation, result.json versioning, summaries from events."""

from __future__ import annotations

import json
import time

import pytest

from mlbench.results.from_events import rank_summary_from_events, ranks_from_events
from mlbench.results.summary import (
    RESULT_FILE,
    SCHEMA_VERSION,
    aggregate_ranks,
    build_result,
    load_result,
    migrate,
    write_result,
)
from mlbench.telemetry.events import EventWriter, events_path, read_events
from mlbench.train.timer import PHASES


def _rank(rank, train_time, *, samples=1000, reached=True, ttt=None, wall=None, **extra):
    r = {
        "rank": rank,
        "steps": 100 + rank,
        "epochs": 2.0,
        "samples": samples,
        "train_time": train_time,
        "wall_time": wall if wall is not None else train_time + 5,
        "phases": {"forward": train_time / 2, "rank_marker": rank},
        "goal_reached": reached,
        "time_to_target": ttt,
        "wall_time_to_target": None if ttt is None else ttt + 1,
        "bytes_sent": 1000 * (rank + 1),
        "bytes_at_target": 500 * (rank + 1) if reached else None,
        "stop_reason": f"stop-{rank}",
        "final_metrics": {"top1": 80.0 + rank},
    }
    r.update(extra)
    return r


def test_aggregate_picks_slowest_rank_by_train_time():
    ranks = [_rank(0, 10.0, ttt=8.0), _rank(1, 12.5, ttt=7.0), _rank(2, 11.0, ttt=9.5)]
    agg = aggregate_ranks(ranks)
    assert agg["slowest_rank"] == 1
    assert agg["train_time"] == 12.5
    assert agg["steps"] == 101
    assert agg["phases_slowest"] == {"forward": 6.25, "rank_marker": 1}
    assert agg["stop_reason"] == "stop-1"
    assert agg["wall_time"] == 17.5  # max over ranks
    assert agg["final_metrics"] == {"top1": 80.0}  # rank 0's (metrics are global already)


def test_slowest_by_train_time_not_wall_time():
    ranks = [_rank(0, 10.0, wall=100.0), _rank(1, 11.0, wall=20.0)]
    agg = aggregate_ranks(ranks)
    assert agg["slowest_rank"] == 1
    assert agg["wall_time"] == 100.0


def test_throughput_is_total_samples_over_slowest_train_time():
    ranks = [
        _rank(0, 10.0, samples=1280),
        _rank(1, 16.0, samples=1280),
        _rank(2, 8.0, samples=1280),
    ]
    agg = aggregate_ranks(ranks)
    assert agg["samples"] == 3840
    assert agg["throughput"] == pytest.approx(3840 / 16.0)


def test_throughput_none_when_no_train_time():
    agg = aggregate_ranks([_rank(0, 0.0)])
    assert agg["throughput"] is None


def test_time_to_target_is_max_over_ranks_when_all_reached():
    ranks = [_rank(0, 10.0, ttt=8.0), _rank(1, 12.0, ttt=9.5), _rank(2, 11.0, ttt=7.0)]
    agg = aggregate_ranks(ranks)
    assert agg["goal_reached"] is True
    assert agg["time_to_target"] == 9.5
    assert agg["wall_time_to_target"] == 10.5
    assert agg["bytes_to_target"] == 500 + 1000 + 1500
    assert agg["bytes_sent"] == 1000 + 2000 + 3000


def test_time_to_target_none_unless_all_ranks_reached():
    ranks = [_rank(0, 10.0, ttt=8.0), _rank(1, 12.0, reached=False, ttt=None)]
    agg = aggregate_ranks(ranks)
    assert agg["goal_reached"] is False
    assert agg["time_to_target"] is None
    assert agg["wall_time_to_target"] is None
    assert agg["bytes_to_target"] is None
    assert agg["bytes_sent"] == 3000


def test_aggregate_empty():
    assert aggregate_ranks([]) == {"slowest_rank": None, "phases_slowest": {}}


def _build(ranks, **kw):
    args = dict(
        run_id="20240101-000000-t-abc123",
        task="cifar10-resnet20",
        state="finished",
        config={"seed": 1},
        official=True,
        official_differences=[],
        environment={"host": "h"},
        world_size=len(ranks),
        backend="gloo",
        algorithm="allreduce",
        goal={"metric": "top1", "goal": "full", "threshold": 80.0, "mode": "max"},
        ranks=ranks,
    )
    args.update(kw)
    return build_result(**args)


def test_build_result_shape():
    ranks = [_rank(0, 10.0, ttt=3.0), _rank(1, 11.0, ttt=4.0)]
    result = _build(ranks)
    assert result["schema_version"] == SCHEMA_VERSION
    assert result["goal"]["reached"] is True
    assert result["goal"]["threshold"] == 80.0
    assert "goal_reached" not in result["summary"]
    assert result["summary"]["time_to_target"] == 4.0
    assert result["summary"]["slowest_rank"] == 1
    assert result["ranks"] == ranks
    assert result["reason"] is None


def test_build_result_goal_not_reached_without_ranks():
    result = _build([], state="failed", reason="crash")
    assert result["goal"]["reached"] is False
    assert result["summary"] == {"slowest_rank": None, "phases_slowest": {}}
    assert (result["state"], result["reason"]) == ("failed", "crash")


def test_write_load_round_trip(tmp_path):
    result = _build([_rank(0, 10.0, ttt=3.0)])
    path = write_result(tmp_path, result)
    assert path == tmp_path / RESULT_FILE
    assert load_result(tmp_path) == json.loads(json.dumps(result))
    assert [p.name for p in tmp_path.iterdir()] == [RESULT_FILE]  # no temp file left


def test_write_result_replaces_existing(tmp_path):
    write_result(tmp_path, _build([_rank(0, 1.0)], state="running"))
    write_result(tmp_path, _build([_rank(0, 2.0)], state="finished"))
    assert load_result(tmp_path)["state"] == "finished"


def test_migrate_current_version_is_unchanged():
    r = {"schema_version": SCHEMA_VERSION, "x": 1}
    assert migrate(dict(r)) == r


def test_migrate_rejects_newer_version():
    with pytest.raises(ValueError, match="newer"):
        migrate({"schema_version": SCHEMA_VERSION + 1})


@pytest.mark.parametrize(
    "bad", [{}, {"schema_version": None}, {"schema_version": "1"}, {"schema_version": 1.0}]
)
def test_migrate_rejects_missing_or_non_integer_version(bad):
    with pytest.raises(ValueError, match="schema_version"):
        migrate(bad)


def test_load_result_rejects_newer_file(tmp_path):
    (tmp_path / RESULT_FILE).write_text(json.dumps({"schema_version": SCHEMA_VERSION + 5}))
    with pytest.raises(ValueError, match="newer"):
        load_result(tmp_path)


def test_migrate_applies_registered_steps(monkeypatch):
    from mlbench.results import summary

    monkeypatch.setattr(summary, "SCHEMA_VERSION", 3)
    monkeypatch.setattr(
        summary,
        "MIGRATIONS",
        {
            1: lambda r: {**r, "schema_version": 2, "added_in_2": True},
            2: lambda r: {**r, "schema_version": 3, "added_in_3": r["added_in_2"]},
        },
    )
    assert summary.migrate({"schema_version": 1}) == {
        "schema_version": 3,
        "added_in_2": True,
        "added_in_3": True,
    }


def test_migrate_rejects_boolean_version():
    with pytest.raises(ValueError):
        migrate({"schema_version": True})


@pytest.mark.parametrize("version", [0, -1])
def test_migrate_rejects_unknown_old_version_cleanly(version):
    with pytest.raises(ValueError, match="schema_version"):
        migrate({"schema_version": version})


# ---------------------------------------------------------------------------- from events


def _emit_window(w, step, *, phases, train_time, bytes_sent, loss=1.0):
    w.emit("train", "loss", loss, step=step, epoch=step / 10)
    w.emit("train", "train_time", train_time, step=step, epoch=step / 10, unit="s")
    for name, v in phases.items():
        w.emit("phase", name, v, step=step, epoch=step / 10, unit="s")
    w.emit("comm", "bytes_sent", float(bytes_sent), step=step, epoch=step / 10, unit="B")


def test_rank_summary_from_events_sums_windows(tmp_path):
    w = EventWriter(events_path(tmp_path, 1), "run", 1)
    w.emit("event", "start", 0, step=0, epoch=0.0)
    _emit_window(
        w,
        10,
        phases={
            "data": 0.5,
            "forward": 1.0,
            "backward": 2.0,
            "communication": 0.25,
            "optimizer": 0.125,
        },
        train_time=4.0,
        bytes_sent=1000,
    )
    w.emit("phase", "eval", 3.0, step=10, epoch=1.0, unit="s")
    w.emit("val", "loss", 0.9, step=10, epoch=1.0)
    w.emit("val", "top1", 55.0, step=10, epoch=1.0)
    _emit_window(
        w,
        20,
        phases={
            "data": 0.5,
            "forward": 1.5,
            "backward": 2.5,
            "communication": 0.75,
            "optimizer": 0.375,
        },
        train_time=6.0,
        bytes_sent=2500,
    )
    w.emit("phase", "checkpoint", 0.5, step=20, epoch=2.0, unit="s")
    w.emit("val", "top1", 61.0, step=20, epoch=2.0)
    w.emit("val", "loss", float("nan"), step=20, epoch=2.0)
    w.close()

    s = rank_summary_from_events(tmp_path, 1)
    assert s is not None
    assert s["rank"] == 1
    assert s["steps"] == 20
    assert s["epochs"] == 2.0
    assert s["train_time"] == pytest.approx(10.0)
    assert s["bytes_sent"] == 3500
    assert set(s["phases"]) == set(PHASES)
    assert s["phases"] == pytest.approx(
        {
            "data": 1.0,
            "forward": 2.5,
            "backward": 4.5,
            "communication": 1.0,
            "optimizer": 0.5,
            "eval": 3.0,
            "checkpoint": 0.5,
        }
    )
    assert s["final_metrics"] == {"loss": None, "top1": 61.0}  # last value of each; NaN -> None
    assert s["wall_time"] >= 0.0


def test_rank_summary_wall_time_ignores_resource_samples(tmp_path):
    # the sampler writes before data loading and after the loop's last record; the rebuilt
    # wall_time must still span only the loop's records
    w = EventWriter(events_path(tmp_path, 0), "run", 0)
    w.emit("resource", "memory_rss", 1e8, step=0, epoch=0.0, unit="B")
    time.sleep(0.25)
    w.emit("event", "start", 0, step=0, epoch=0.0)
    w.emit("train", "train_time", 0.5, step=5, epoch=0.5, unit="s")
    w.emit("resource", "memory_rss", 1e8, step=5, epoch=0.5, unit="B")
    w.emit("phase", "forward", 0.25, step=9, epoch=0.9, unit="s")
    time.sleep(0.25)
    w.emit("resource", "memory_rss", 1e8, step=9, epoch=0.9, unit="B")
    w.close()
    records = read_events(events_path(tmp_path, 0))
    s = rank_summary_from_events(tmp_path, 0)
    assert s["wall_time"] == pytest.approx(records[4]["time"] - records[1]["time"])
    assert s["wall_time"] < 0.2
    assert s["steps"] == 9 and s["train_time"] == 0.5 and s["phases"]["forward"] == 0.25


def test_rank_summary_ignores_torn_tail(tmp_path):
    path = events_path(tmp_path, 0)
    w = EventWriter(path, "run", 0)
    w.emit("phase", "forward", 1.0, step=5, epoch=0.5)
    w.close()
    with open(path, "ab") as fh:
        fh.write(b'{"run_id":"run","rank":0,"seq":1,"time":1,"step":9,"epoch":0.9,"kind":"ph')
    s = rank_summary_from_events(tmp_path, 0)
    assert s["steps"] == 5
    assert s["phases"]["forward"] == 1.0


def test_rank_summary_missing_or_empty(tmp_path):
    assert rank_summary_from_events(tmp_path, 0) is None
    events_path(tmp_path, 0).write_text("")
    assert rank_summary_from_events(tmp_path, 0) is None


def test_ranks_from_events_skips_missing_ranks_and_aggregates(tmp_path):
    for rank, tt in ((0, 3.0), (2, 5.0)):
        w = EventWriter(events_path(tmp_path, rank), "run", rank)
        w.emit("train", "train_time", tt, step=rank + 1, epoch=0.1)
        w.close()
    ranks = ranks_from_events(tmp_path, 3)
    assert [r["rank"] for r in ranks] == [0, 2]
    agg = aggregate_ranks(ranks)
    assert agg["slowest_rank"] == 2
    assert agg["train_time"] == 5.0
