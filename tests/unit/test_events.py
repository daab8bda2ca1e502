"""mlbench.telemetry.events: the append-only per-rank event file."""

from __future__ import annotations

import json
import math

import pytest

from mlbench import limits
from mlbench.errors import RecordError
from mlbench.telemetry.events import (
    KINDS,
    EventWriter,
    encode_record,
    events_path,
    make_record,
    read_events,
    read_new_events,
)


def _strict_json(line: str):
    def reject(token):
        raise AssertionError(f"non-standard JSON token {token}")

    return json.loads(line, parse_constant=reject)


@pytest.fixture
def path(tmp_path):
    return events_path(tmp_path, 3)


def test_events_path_names_the_rank(tmp_path):
    assert events_path(tmp_path, 0) == tmp_path / "rank-0.jsonl"
    assert events_path(str(tmp_path), 12).name == "rank-12.jsonl"


def test_round_trip_and_dense_seq(path):
    w = EventWriter(path, "run-1", 3)
    emitted = [
        w.emit("train", "loss", 2.5, step=10, epoch=0.5),
        w.emit("phase", "forward", 0.125, step=10, epoch=0.5, unit="s"),
        w.emit("comm", "bytes_sent", 4096, step=10, epoch=0.5, unit="B"),
        w.emit("val", "top1", 71.25, step=20, epoch=1.0),
    ]
    w.close()
    records = read_events(path)
    assert records == emitted
    assert [r["seq"] for r in records] == [0, 1, 2, 3]
    assert {r["run_id"] for r in records} == {"run-1"}
    assert {r["rank"] for r in records} == {3}
    assert [(r["kind"], r["name"], r["value"]) for r in records] == [
        ("train", "loss", 2.5),
        ("phase", "forward", 0.125),
        ("comm", "bytes_sent", 4096),
        ("val", "top1", 71.25),
    ]
    assert records[1]["unit"] == "s"
    assert "unit" not in records[0]
    assert records[3]["step"] == 20 and records[3]["epoch"] == 1.0


def test_one_compact_json_object_per_line(path):
    w = EventWriter(path, "r", 0)
    for i in range(3):
        w.emit("train", "loss", float(i), step=i, epoch=0.0)
    w.close()
    lines = path.read_text().split("\n")
    assert lines[-1] == ""  # ends with a newline
    assert len(lines) == 4
    for i, line in enumerate(lines[:3]):
        assert _strict_json(line)["seq"] == i


def test_records_are_on_disk_before_close(path):
    # line-buffered: a reader (progress display, uploader) sees each record as it is emitted
    w = EventWriter(path, "r", 0)
    w.emit("event", "start", 0, step=0, epoch=0.0)
    assert [r["name"] for r in read_events(path)] == ["start"]
    w.emit("event", "end", 1, step=0, epoch=0.0)
    assert [r["name"] for r in read_events(path)] == ["start", "end"]
    w.close()


def test_seq_continues_after_reopen(path):
    w = EventWriter(path, "r", 0)
    for i in range(3):
        w.emit("train", "loss", float(i), step=i, epoch=0.0)
    w.close()
    w2 = EventWriter(path, "r", 0)
    assert w2.seq == 3
    w2.emit("train", "loss", 9.0, step=3, epoch=0.0)
    w2.close()
    assert [r["seq"] for r in read_events(path)] == [0, 1, 2, 3]


def test_close_is_idempotent_and_emit_after_close_fails(path):
    w = EventWriter(path, "r", 0)
    w.close()
    w.close()
    with pytest.raises(AssertionError):
        w.emit("train", "loss", 1.0, step=0, epoch=0.0)


@pytest.mark.parametrize("kind", ["metric", "Train", "", "phase "])
def test_unknown_kind_rejected_and_nothing_written(path, kind):
    w = EventWriter(path, "r", 0)
    with pytest.raises(ValueError, match="kind"):
        w.emit(kind, "x", 1.0, step=0, epoch=0.0)
    w.emit("train", "loss", 1.0, step=0, epoch=0.0)
    w.close()
    assert [r["seq"] for r in read_events(path)] == [0]  # the rejected one took no seq


def test_kinds_are_the_documented_set():
    assert frozenset({"train", "val", "phase", "resource", "comm", "event"}) == KINDS


@pytest.mark.parametrize("value", ["1.0", None, True, False, [1.0], {"v": 1}])
def test_non_number_value_rejected(value):
    with pytest.raises(ValueError, match="number"):
        make_record("r", 0, 0, "train", "loss", value, step=0, epoch=0.0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "text"), [(math.nan, "nan"), (math.inf, "inf"), (-math.inf, "-inf")]
)
def test_nonfinite_value_stored_as_null(path, value, text):
    w = EventWriter(path, "r", 0)
    rec = w.emit("train", "loss", value, step=5, epoch=0.25)
    w.close()
    assert rec["value"] is None and rec["nonfinite"] == text
    line = path.read_text().strip()
    stored = _strict_json(line)  # still strict JSON: no NaN/Infinity tokens
    assert stored["value"] is None
    assert stored["nonfinite"] == text
    assert stored["name"] == "loss" and stored["step"] == 5


def test_finite_record_has_no_nonfinite_key():
    rec = make_record("r", 1, 7, "val", "loss", 0.5, step=2, epoch=1.5, when=123.0)
    assert rec == {
        "run_id": "r",
        "rank": 1,
        "seq": 7,
        "time": 123.0,
        "step": 2,
        "epoch": 1.5,
        "kind": "val",
        "name": "loss",
        "value": 0.5,
    }


def test_read_missing_file(tmp_path):
    assert read_events(tmp_path / "absent.jsonl") == []
    assert read_new_events(tmp_path / "absent.jsonl", 17) == ([], 17)


def _write(path, n, start=0):
    w = EventWriter(path, "r", 0)
    for i in range(start, start + n):
        w.emit("train", "loss", float(i), step=i, epoch=0.0)
    w.close()


def test_torn_last_line_is_ignored_and_offset_resumes(path):
    _write(path, 2)
    complete = path.read_bytes()
    full_line = json.dumps(
        make_record("r", 0, 2, "train", "loss", 2.0, step=2, epoch=0.0), separators=(",", ":")
    )
    with open(path, "ab") as fh:
        fh.write(full_line[:20].encode())  # crash mid-write
    records, offset = read_new_events(path)
    assert [r["seq"] for r in records] == [0, 1]
    assert offset == len(complete)
    assert read_events(path) == records

    # nothing new yet: the same offset comes back
    assert read_new_events(path, offset) == ([], offset)

    # the writer finishes the line and appends another: resuming yields exactly the new records
    with open(path, "ab") as fh:
        fh.write((full_line[20:] + "\n").encode())
    rec3 = make_record("r", 0, 3, "train", "loss", 3.0, step=3, epoch=0.0)
    with open(path, "ab") as fh:
        fh.write((json.dumps(rec3) + "\n").encode())
    more, offset2 = read_new_events(path, offset)
    assert [r["seq"] for r in more] == [2, 3]
    assert offset2 == path.stat().st_size
    assert [r["seq"] for r in read_events(path)] == [0, 1, 2, 3]


def test_tailing_in_chunks_sees_every_record_once(path):
    w = EventWriter(path, "r", 0)
    seen = []
    offset = 0
    for i in range(10):
        w.emit("train", "loss", float(i), step=i, epoch=0.0)
        if i % 3 == 0:
            new, offset = read_new_events(path, offset)
            seen.extend(r["seq"] for r in new)
    w.close()
    new, offset = read_new_events(path, offset)
    seen.extend(r["seq"] for r in new)
    assert seen == list(range(10))
    assert offset == path.stat().st_size


def test_torn_middle_line_is_skipped(path):
    _write(path, 1)
    with open(path, "ab") as fh:
        fh.write(b'{"run_id":"r","se\n')  # torn by a crash, then the run was resumed
    with open(path, "ab") as fh:
        rec = make_record("r", 0, 1, "train", "loss", 1.0, step=1, epoch=0.0)
        fh.write((json.dumps(rec) + "\n").encode())
    assert [r["seq"] for r in read_events(path)] == [0, 1]


def test_blank_lines_ignored(path):
    _write(path, 1)
    with open(path, "ab") as fh:
        fh.write(b"\n   \n")
    records, offset = read_new_events(path)
    assert len(records) == 1
    assert offset == path.stat().st_size


def test_reopen_after_torn_line_keeps_new_records(path):
    _write(path, 2)
    with open(path, "ab") as fh:
        fh.write(b'{"run_id":"r","rank":0,"se')  # crash mid-write
    w = EventWriter(path, "r", 0)
    assert w.seq == 2
    w.emit("train", "loss", 2.0, step=2, epoch=0.0)
    w.close()
    assert [r["seq"] for r in read_events(path)] == [0, 1, 2]


@pytest.mark.parametrize(
    ("name", "value", "unit", "when"),
    [
        ("loss", 0.1 + 0.2, None, 1795374641.5018725),
        ("throughput", 22000, "samples/s", 0.0),  # an int value
        ('we"ird\\name\u2028', -1e-320, "µs", 1e22),  # escapes, a subnormal, an exponent
        ("Δ/ünïcode", float("nan"), "s", 1.5),
        ("x", float("-inf"), None, 2.0),
        ("big", 1e300, "B", 3.0),
    ],
)
def test_fast_encoding_is_exactly_json_dumps(name, value, unit, when):
    """The writer's hand-made line encoder must produce json.dumps's bytes for every record."""
    record = make_record("run-1", 3, 7, "train", name, value, step=11, epoch=0.25, unit=unit)
    record["time"] = when
    assert encode_record(record) == json.dumps(record, separators=(",", ":"))
    extra = {**record, "other": [1, 2]}  # an unknown field: the generic encoder
    assert encode_record(extra) == json.dumps(extra, separators=(",", ":"))


def test_emit_many_writes_consecutive_seqs_at_one_time(path):
    w = EventWriter(path, "run-1", 0)
    w.emit("event", "start", 0, step=0, epoch=0.0)
    out = w.emit_many(
        [("train", "loss", 0.5, None), ("phase", "data", 0.01, "s")], step=10, epoch=0.1
    )
    w.close()
    on_disk = read_events(path)
    assert on_disk[1:] == out
    assert [r["seq"] for r in on_disk] == [0, 1, 2]
    assert out[0]["time"] == out[1]["time"] and out[1]["unit"] == "s" and "unit" not in out[0]


# ---------------------------------------------------------------------------- the record's limits
# The writer refuses what the master's ingest schema refuses (mlbench.limits is the one source),
# at the emitting call: a record the master would 422 must never reach the file.


@pytest.mark.parametrize(
    ("kwargs", "field", "limit"),
    [
        ({"name": "n" * 65}, "name", "64"),
        ({"name": ""}, "name", "at least 1"),
        ({"name": "loss\x00"}, "name", "control"),
        ({"name": "loss\n"}, "name", "control"),
        ({"unit": "u" * 17}, "unit", "16"),
        ({"unit": "s\x7f"}, "unit", "control"),
        ({"run_id": "r" * 65}, "run_id", "64"),
        ({"run_id": "bad run"}, "run_id", "letters"),
        ({"rank": -1}, "rank", "1000000"),
        ({"rank": 1_000_001}, "rank", "1000000"),
        ({"seq": 2**62 + 1}, "seq", str(2**62)),
        ({"step": -1}, "step", str(2**62)),
        ({"step": 1.5}, "step", "integer"),
        ({"epoch": math.nan}, "epoch", "finite"),
        ({"when": math.inf}, "time", "finite"),
        ({"value": 10**400}, "value", "float"),
    ],
)
def test_a_record_past_the_masters_limits_is_refused_naming_field_and_limit(kwargs, field, limit):
    args = {"run_id": "run-1", "rank": 0, "seq": 0, "kind": "train", "name": "loss", "value": 1.0}
    args |= {k: v for k, v in kwargs.items() if k in args}
    opts = {"step": 0, "epoch": 0.0, "unit": None, "when": None}
    opts |= {k: v for k, v in kwargs.items() if k in opts}
    with pytest.raises(RecordError, match=field) as info:
        make_record(**args, **opts)
    assert limit in str(info.value)
    assert isinstance(info.value, ValueError)  # callers that caught ValueError still do


def test_the_limits_are_exactly_the_masters():
    """At each limit the writer accepts, one past it refuses, and the master's schema agrees."""
    from mlbench.server.schemas import EVENT_BATCH

    def master_accepts(record) -> bool:
        try:
            EVENT_BATCH.validate_json(json.dumps({"events": [record]}))
        except Exception:
            return False
        return True

    cases = [
        ("name", "n" * limits.NAME_MAX, "n" * (limits.NAME_MAX + 1)),
        ("unit", "u" * limits.UNIT_MAX, "u" * (limits.UNIT_MAX + 1)),
        ("name", "Δ/ünïcode ok", "tab\there"),
        ("rank", limits.RANK_MAX, limits.RANK_MAX + 1),
        ("seq", limits.SEQ_MAX, limits.SEQ_MAX + 1),
        ("step", limits.STEP_MAX, limits.STEP_MAX + 1),
        ("run_id", "r" * limits.RUN_ID_MAX, "r" * (limits.RUN_ID_MAX + 1)),
    ]
    base = {"run_id": "run-1", "rank": 0, "seq": 0, "kind": "train", "name": "loss"}
    base |= {"value": 1.0, "step": 0, "epoch": 0.0}
    for field, ok, bad in cases:
        good = make_record(**(base | {field: ok}))
        assert master_accepts(good), field
        with pytest.raises(RecordError):
            make_record(**(base | {field: bad}))
        assert not master_accepts(good | {field: bad}), field


def test_writer_refuses_a_long_name_and_writes_nothing(path):
    w = EventWriter(path, "r", 0)
    with pytest.raises(RecordError, match="name"):
        w.emit_many([("train", "loss", 1.0, None), ("train", "x" * 65, 1.0, None)], step=0, epoch=0)
    w.emit("train", "loss", 1.0, step=0, epoch=0.0)
    w.close()
    assert [(r["seq"], r["name"]) for r in read_events(path)] == [(0, "loss")]


def test_writer_refuses_a_bad_run_id_or_rank_when_opened(tmp_path):
    with pytest.raises(RecordError, match="run_id"):
        EventWriter(events_path(tmp_path, 0), "run with spaces", 0)
    with pytest.raises(RecordError, match="rank"):
        EventWriter(events_path(tmp_path, 0), "run", -1)
