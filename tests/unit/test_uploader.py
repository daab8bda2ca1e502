"""mlbench.telemetry.uploader against a scripted master (httpx.MockTransport): how a refused
batch is taken apart, and that a refusal of the upload itself ends a drain at once.

The same behaviour against a real master process is in tests/server/test_upload.py."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from mlbench.telemetry.events import encode_record, events_path, make_record
from mlbench.telemetry.uploader import QUARANTINE_FILE, Uploader


def _write(run_dir: Path, rank: int, n: int, bad: set[int] = frozenset()) -> list[dict]:
    """``n`` records of one rank; those at ``bad`` seqs get a 65-character name (what a writer
    before the limits let through)."""
    records = []
    for seq in range(n):
        rec = make_record("run-1", rank, seq, "train", "loss", float(seq), step=seq, epoch=0.0)
        if seq in bad:
            rec["name"] = "n" * 65
        records.append(rec)
    with open(events_path(run_dir, rank), "a") as fh:
        fh.write("".join(encode_record(r) + "\n" for r in records))
    return records


class FakeMaster:
    """Stores (rank, seq) of accepted records; refuses a batch holding a long name with a 422
    that locates nothing (so the uploader must bisect) unless ``locate``."""

    def __init__(self, locate: bool = False, status: int | None = None) -> None:
        self.stored: set[tuple[int, int]] = set()
        self.requests = 0
        self.locate, self.status = locate, status

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        if self.status is not None:
            return httpx.Response(self.status, json={"detail": "no"})
        if request.method == "PUT":
            return httpx.Response(200, json={})
        events = json.loads(request.content)["events"]
        bad = [i for i, e in enumerate(events) if len(e["name"]) > 64]
        if bad:
            locs = [["body", "events", i, "name"] if self.locate else ["body"] for i in bad]
            detail = [
                {"loc": loc, "msg": "String should have at most 64 characters"} for loc in locs
            ]
            return httpx.Response(422, json={"detail": detail})
        self.stored |= {(e["rank"], e["seq"]) for e in events}
        return httpx.Response(200, json={"received": len(events), "inserted": len(events)})


@pytest.mark.parametrize("locate", [False, True])
def test_a_refused_record_is_isolated_and_the_rest_stored(tmp_path: Path, locate: bool) -> None:
    rank0 = _write(tmp_path, 0, 100, bad={37, 38, 90})
    rank1 = _write(tmp_path, 1, 50)
    master = FakeMaster(locate=locate)
    up = Uploader(
        tmp_path, "run-1", "http://m", 2, batch_size=64, transport=httpx.MockTransport(master)
    )
    assert up.finish(timeout=5) is False  # not complete: three records are not on the master
    good = {(r["rank"], r["seq"]) for r in rank0 + rank1 if len(r["name"]) <= 64}
    assert master.stored == good
    status = up.status()
    assert (status.quarantined, status.pending, status.uploaded) == (3, 0, len(good))
    assert not status.complete and "64 characters" in str(status.reason)
    lines = [json.loads(x) for x in (tmp_path / QUARANTINE_FILE).read_text().splitlines()]
    assert [(q["rank"], q["seq"]) for q in lines] == [(0, 37), (0, 38), (0, 90)]
    assert all("64" in q["reason"] and q["record"]["name"] == "n" * 65 for q in lines)
    # locations: one extra request per refused batch; bisection: about log2(batch) per record
    assert master.requests <= (5 if locate else 40)


def test_a_retried_refusal_is_logged_once(tmp_path: Path) -> None:
    _write(tmp_path, 0, 10, bad={4})
    for _ in range(2):  # a second uploader (an import) meets the same refusal
        up = Uploader(tmp_path, "run-1", "http://m", 1, transport=httpx.MockTransport(FakeMaster()))
        up.finish(timeout=5)
        assert up.status().quarantined == 1
    assert len((tmp_path / QUARANTINE_FILE).read_text().splitlines()) == 1


@pytest.mark.parametrize("status", [401, 403, 404])
def test_a_refused_upload_ends_the_drain_at_once(tmp_path: Path, status: int) -> None:
    """Retrying a 401/403/404 cannot help: the drain returns now, and nothing is quarantined
    (the records are fine, the upload is not) — they are pending, for an import."""
    _write(tmp_path, 0, 10)
    _write(tmp_path, 1, 5)
    master = FakeMaster(status=status)
    up = Uploader(tmp_path, "run-1", "http://m", 2, transport=httpx.MockTransport(master))
    start = time.monotonic()
    assert up.finish(timeout=60) is False
    assert time.monotonic() - start < 5
    status_ = up.status()
    assert (status_.quarantined, status_.pending) == (0, 15)
    assert f"HTTP {status}" in str(status_.reason)
    assert not (tmp_path / QUARANTINE_FILE).exists()


def test_a_node_uploads_only_its_own_ranks(tmp_path: Path) -> None:
    """A per-node agent's uploader (``ranks=``) sends its ranks' files, counts only them as
    pending, and never reads the other nodes' (absent on its disk)."""
    _write(tmp_path, 1, 10)
    _write(tmp_path, 0, 7)  # another node's file, present on a shared filesystem
    master = FakeMaster()
    up = Uploader(
        tmp_path, "run-1", "http://m", 4, ranks=[1], transport=httpx.MockTransport(master)
    )
    assert up.pending() == 10
    assert up.finish(timeout=5) is True
    assert master.stored == {(1, seq) for seq in range(10)}
    assert up.status().uploaded == 10
    with pytest.raises(ValueError, match="outside a world of 4"):
        Uploader(tmp_path, "run-1", "http://m", 4, ranks=[4])
