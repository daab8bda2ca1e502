"""Append-only event records (DESIGN §4): one JSON object per line, one file per rank.

The file is the durable source of truth: it is written before anything else looks at an event
(progress display, uploads, summaries), line-buffered so a crash loses at most the line being
written, and readers tolerate a torn last line.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from mlbench import limits
from mlbench.errors import RecordError
from mlbench.vocab import EVENT_KINDS

KINDS = frozenset(k.value for k in EVENT_KINDS)  # the shared vocabulary (mlbench.vocab)


def events_path(run_dir: Path, rank: int) -> Path:
    return Path(run_dir) / f"rank-{rank}.jsonl"


def make_record(
    run_id: str,
    rank: int,
    seq: int,
    kind: str,
    name: str,
    value: float,
    *,
    step: int,
    epoch: float,
    unit: str | None = None,
    when: float | None = None,
) -> dict[str, Any]:
    """Build a validated record; kind and rank are fields, never encoded in ``name``.

    Every field is held to the master's ingest schema (``mlbench.limits``, the one source of
    both), and a record past a limit is a :class:`~mlbench.errors.RecordError` naming the field
    and the limit, raised here, at the emitting call. Why not leave it to the master: it
    refuses the record's whole upload batch, long after the code that made it has moved on.
    """
    if kind not in KINDS:
        raise RecordError(f"event kind {kind!r} is not one of {sorted(KINDS)}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RecordError(f"event value for {name!r} must be a number, got {value!r}")
    # the checks cost ~0.3 µs per record: one memo lookup for the texts (a loop repeats its
    # names), and the exact checks only when the quick ones fail, to find the culprit
    if (run_id, name, unit) not in _CHECKED:
        _check_texts(run_id, name, unit)
    if not (
        type(rank) is int
        and type(seq) is int
        and type(step) is int
        and 0 <= rank <= limits.RANK_MAX
        and 0 <= seq <= limits.SEQ_MAX
        and 0 <= step <= limits.STEP_MAX
    ):
        _check_int("rank", rank, limits.RANK_MAX)
        _check_int("seq", seq, limits.SEQ_MAX)
        _check_int("step", step, limits.STEP_MAX)
    when = time.time() if when is None else when
    if not (type(epoch) is float and type(when) is float and math.isfinite(epoch + when)):
        _check_finite("epoch", epoch)
        _check_finite("time", when)
    record: dict[str, Any] = {
        "run_id": run_id,
        "rank": rank,
        "seq": seq,
        "time": when,
        "step": step,
        "epoch": epoch,
        "kind": kind,
        "name": name,
        "value": value,
    }
    if not _finite(value):
        if isinstance(value, int):  # finite, but no float holds it: the master stores floats
            raise RecordError(f"event value for {name!r} is an integer too large for a float")
        # JSON has no NaN/inf; keep the record (a diverging loss is important) and say what it was.
        record["value"] = None
        record["nonfinite"] = str(value)
    if unit is not None:
        record["unit"] = unit
    return record


_PRINTABLE = re.compile(limits.PRINTABLE)
_RUN_ID = re.compile(limits.RUN_ID_PATTERN)
_RULES = {
    _PRINTABLE: "must not contain control characters (the master refuses them)",
    _RUN_ID: "must start with a letter or digit and hold only letters, digits, '.', '_' and '-'",
}
_CHECKED: set[tuple[str, str, str | None]] = set()  # (run_id, name, unit) found valid


def _check_texts(run_id: str, name: str, unit: str | None) -> None:
    _check_text("run_id", run_id, 1, limits.RUN_ID_MAX, _RUN_ID)
    _check_text("name", name, 1, limits.NAME_MAX)
    if unit is not None:
        _check_text("unit", unit, 0, limits.UNIT_MAX)
    if len(_CHECKED) < 10_000:
        _CHECKED.add((run_id, name, unit))


def _check_text(
    field: str, text: str, shortest: int, longest: int, rule: re.Pattern[str] = _PRINTABLE
) -> None:
    """A text field within ``limits``, or a :class:`RecordError` naming it and the limit."""
    if not isinstance(text, str):
        raise RecordError(f"event {field} must be a string, got {text!r}")
    shown = repr(text) if len(text) <= 80 else repr(text[:77] + "...")
    if len(text) > longest:
        raise RecordError(
            f"event {field} {shown} has {len(text)} characters, more than the limit of {longest}"
        )
    if len(text) < shortest:
        raise RecordError(f"event {field} must have at least {shortest} character(s)")
    if not rule.fullmatch(text):  # not match: Python's $ also matches before a final newline
        raise RecordError(f"event {field} {shown} {_RULES[rule]}")


def _check_int(field: str, number: int, largest: int) -> None:
    if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number <= largest:
        raise RecordError(f"event {field} must be an integer from 0 to {largest}, got {number!r}")


def _finite(number: float) -> bool:
    try:
        return math.isfinite(number)
    except OverflowError:  # an int past the float range
        return False


def _check_finite(field: str, number: float) -> None:
    if isinstance(number, bool) or not isinstance(number, int | float) or not _finite(number):
        raise RecordError(f"event {field} must be a finite number, got {number!r}")


_STRINGS: dict[str, str] = {}


def _json_str(text: str) -> str:
    """``json.dumps(text)``, memoised: kinds, names, units and the run id repeat endlessly."""
    enc = _STRINGS.get(text)
    if enc is None:
        enc = json.dumps(text)
        if len(_STRINGS) < 10_000:
            _STRINGS[text] = enc
    return enc


def encode_record(record: dict[str, Any]) -> str:
    """The record as one compact JSON line, byte for byte what ``json.dumps(record,
    separators=(",", ":"))`` writes, in ~1.5 µs instead of ~5.5.

    Why by hand: a training step of task 2a takes ~0.45 ms and the loop writes 13 records per
    log window (every 10 steps); with json.dumps and a write per record that was 11 µs per record,
    ~15 µs per step, most of the loop's overhead over a bare loop (benchmarks/harness_overhead.py).
    Numbers use ``repr`` as the json module does; anything but the known fields falls back to
    json.dumps.
    """
    if record.keys() - _FAST_KEYS:
        return json.dumps(record, separators=(",", ":"))
    value = record["value"]
    parts = [
        '{"run_id":',
        _json_str(record["run_id"]),
        ',"rank":',
        repr(record["rank"]),
        ',"seq":',
        repr(record["seq"]),
        ',"time":',
        repr(record["time"]),
        ',"step":',
        repr(record["step"]),
        ',"epoch":',
        repr(record["epoch"]),
        ',"kind":',
        _json_str(record["kind"]),
        ',"name":',
        _json_str(record["name"]),
        ',"value":',
        "null" if value is None else repr(value),
    ]
    if "nonfinite" in record:
        parts += [',"nonfinite":', _json_str(record["nonfinite"])]
    if "unit" in record:
        parts += [',"unit":', _json_str(record["unit"])]
    parts.append("}")
    return "".join(parts)


_FAST_KEYS = frozenset(
    {"run_id", "rank", "seq", "time", "step", "epoch", "kind", "name", "value", "nonfinite", "unit"}
)


class EventWriter:
    """Writes one rank's records; ``seq`` is dense from 0, which makes uploads idempotent.

    Thread-safe: the training loop and the resource sampler's thread share one writer. A lock
    around numbering and writing keeps ``seq`` unique and in file order (and ``time``
    non-decreasing along it) and never lets two lines interleave. An emit costs ~3 µs (record,
    encoding, a line-buffered write); :meth:`emit_many` writes a log window's records with one
    lock, one clock read and one write. The loop emits between steps, outside every timed phase.
    """

    def __init__(self, path: Path, run_id: str, rank: int) -> None:
        _check_text("run_id", run_id, 1, limits.RUN_ID_MAX, _RUN_ID)  # refused now, not per emit
        _check_int("rank", rank, limits.RANK_MAX)
        self.path = Path(path)
        self.run_id = run_id
        self.rank = rank
        _drop_torn_tail(self.path)
        self.seq = sum(1 for _ in read_events(self.path)) if self.path.exists() else 0
        self._fh: TextIO | None = open(self.path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        self._lock = threading.Lock()

    def emit(
        self,
        kind: str,
        name: str,
        value: float,
        *,
        step: int,
        epoch: float,
        unit: str | None = None,
    ) -> dict[str, Any]:
        return self.emit_many([(kind, name, value, unit)], step=step, epoch=epoch)[0]

    def emit_many(
        self,
        items: list[tuple[str, str, float, str | None]],
        *,
        step: int,
        epoch: float,
    ) -> list[dict[str, Any]]:
        """Records ``(kind, name, value, unit)`` at one step and one time, consecutive seqs."""
        with self._lock:
            when = time.time()
            records = [
                make_record(
                    self.run_id,
                    self.rank,
                    self.seq + i,
                    kind,
                    name,
                    value,
                    step=step,
                    epoch=epoch,
                    unit=unit,
                    when=when,
                )
                for i, (kind, name, value, unit) in enumerate(items)
            ]
            assert self._fh is not None, "emit after close"
            self._fh.write("".join(encode_record(r) + "\n" for r in records))
            self.seq += len(records)
        return records

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


def _drop_torn_tail(path: Path) -> None:
    """Cut a line torn by a crash so the next record starts on a line of its own."""
    try:
        with open(path, "rb+") as fh:
            data = fh.read()
            if data and not data.endswith(b"\n"):
                fh.truncate(data.rfind(b"\n") + 1)
    except FileNotFoundError:
        pass


def read_events(path: Path, offset: int = 0) -> list[dict[str, Any]]:
    """All complete records in ``path`` from byte ``offset``; a torn last line is ignored."""
    records, _ = read_new_events(path, offset)
    return records


def read_new_events(path: Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Complete records after ``offset`` and the offset to resume from (for tailing a live file)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset
    records = []
    for line in data[: end + 1].splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line torn by a crash mid-write, followed by later records
    return records, offset + end + 1
