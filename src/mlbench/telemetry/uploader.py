"""Loss-free event upload: tail the run's JSONL files, POST them to the master in batches.

Design (DESIGN §2): workers only ever append to their local file; this uploader runs in the
*launcher* process, in a thread, so training never waits on the network. It keeps a byte offset
per rank file and advances it only after the master acknowledged a batch. Any failure (master
down, restarting, slow) leaves the offset where it was and retries with exponential back-off;
because the master ingests idempotently by (run, rank, seq), re-sending a batch whose
acknowledgement was lost duplicates nothing. Nothing is lost either: the file is the source of
truth and the uploader catches up from it.

A record the master *refuses* (a 4xx for the record itself: a 65-character metric name written
by an old or foreign writer) would otherwise stop its rank's upload for good, since retrying the
batch cannot help, and behind it every later rank. So a refused batch is taken apart: the
records the 422's error locations (``events[i]``) name — or, when it names none, the halves of
a bisection down to single records — are **quarantined**: appended with the master's reason to
``upload-quarantine.jsonl`` in the run directory, counted, and stepped over; the rest of the
batch is stored and the upload goes on. Ranks are uploaded independently: one rank's failure
never holds another's records back. :meth:`Uploader.status` says what did not make it
(``complete``, ``quarantined``, ``pending``) — the launcher records it in result.json and tells
the master; ``mlbench import`` re-sends the files to complete the upload once they are fixed.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from mlbench.telemetry.events import events_path

QUARANTINE_FILE = "upload-quarantine.jsonl"
#: a refusal of what the batch holds (a record, or the batch's size): take the batch apart
_RECORD_REFUSALS = (400, 413, 422)


class UploadError(RuntimeError):
    """A batch was not stored this time (master down, busy, slow): retrying can help."""


class UploadRefused(UploadError):
    """The master refuses the upload itself (no or wrong token, no such run): retrying the
    same request cannot help, so a drain stops at once instead of spending its time."""


@dataclass
class UploadStatus:
    """What an upload achieved: recorded as ``upload`` in result.json and sent to the master."""

    complete: bool  # every record of the rank files is stored on the master
    uploaded: int  # records the master acknowledged (stored now or before)
    quarantined: int  # records the master refused, kept in upload-quarantine.jsonl
    pending: int  # records not sent (the master was unreachable or refused the upload)
    reason: str | None  # why it is not complete
    drain_seconds: float | None = None  # how long the final drain took

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Uploader:
    def __init__(
        self,
        run_dir: Path,
        run_id: str,
        master_url: str,
        world_size: int,
        *,
        token: str | None = None,
        ranks: Sequence[int] | None = None,
        batch_size: int = 5000,
        interval: float = 1.0,
        max_backoff: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.run_dir, self.run_id = Path(run_dir), run_id
        self.base_url = master_url.rstrip("/")
        self.url = self.base_url + f"/api/runs/{run_id}/events"
        self.world_size = world_size
        # the rank files this uploader owns: all of them for a one-machine launcher, the node's
        # own for a per-node agent (each node uploads what it wrote; none waits on another's disk)
        self.ranks = list(range(world_size)) if ranks is None else list(ranks)
        if any(not 0 <= r < world_size for r in self.ranks):
            raise ValueError(f"ranks {self.ranks} outside a world of {world_size}")
        self.batch_size, self.interval, self.max_backoff = batch_size, interval, max_backoff
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(headers=headers, timeout=30.0, transport=transport)
        self.offsets = [0] * world_size
        self.sent = 0
        self.failures = 0
        self.last_error: str | None = None
        self.refused: str | None = None  # why the master refuses the upload itself, if it does
        self.quarantined: dict[tuple[int, str], str] = {}  # (rank, record key) → reason
        self.drain_seconds: float | None = None
        self._logged = _logged_refusals(self.run_dir / QUARANTINE_FILE)
        self._deadline: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ one pass
    def poll_once(self) -> int:
        """Upload everything new in every rank file. A rank that fails does not stop the
        others; the pass then raises the first rank's error (UploadRefused before others)."""
        uploaded = 0
        errors: list[UploadError] = []
        for rank in self.ranks:
            try:
                uploaded += self._upload_rank(rank)
            except UploadError as exc:
                errors.append(exc)
        if errors:
            raise next((e for e in errors if isinstance(e, UploadRefused)), errors[0])
        self.refused = None
        return uploaded

    def _upload_rank(self, rank: int) -> int:
        path = events_path(self.run_dir, rank)
        uploaded = 0
        while True:
            records, end = read_batch(path, self.offsets[rank], self.batch_size)
            if not records:
                self.offsets[rank] = end  # skip blank/torn-and-superseded lines
                return uploaded
            stored = self._send(rank, records)
            self.offsets[rank] = end  # only past what the master stored or refused for good
            uploaded += stored
            self.sent += stored

    def _send(self, rank: int, records: list[Any]) -> int:
        """Store ``records``, quarantining those the master refuses; returns how many were
        stored. Raises UploadError (nothing counted) when the master could not take them now."""
        stored = 0
        todo = [records]
        while todo:
            batch = todo.pop()
            resp = self._post(batch)
            if resp is None:
                stored += len(batch)
                continue
            named = refused_records(resp, len(batch))
            if len(batch) == 1:
                why = named.get(0) or f"HTTP {resp.status_code}: {resp.text[:300]}"
                self._quarantine(rank, batch, {0: why})
            elif named:  # the error locations say which: quarantine them, send the rest
                self._quarantine(rank, batch, named)
                rest = [r for i, r in enumerate(batch) if i not in named]
                if rest:
                    todo.append(rest)
            else:  # no locations: bisect, first half first (a rank's records stay in order)
                mid = len(batch) // 2
                todo += [batch[mid:], batch[:mid]]
        return stored

    def _post(self, records: list[Any]) -> httpx.Response | None:
        """None when stored; the response when the master refused what the batch holds."""
        try:
            resp = self.client.post(
                self.url, json={"events": records}, timeout=self._request_timeout()
            )
        except httpx.HTTPError as exc:
            raise UploadError(f"master unreachable: {exc}") from exc
        if resp.status_code >= 500 or resp.status_code in (408, 429):
            raise UploadError(f"master busy: HTTP {resp.status_code}")
        if resp.status_code in _RECORD_REFUSALS:
            return resp
        if resp.status_code >= 400:  # the upload itself (token, run): retrying cannot help
            self.refused = f"master refused the upload: HTTP {resp.status_code} {resp.text[:200]}"
            raise UploadRefused(self.refused)
        return None

    def _request_timeout(self) -> float:
        """30 s, or what is left of the drain's deadline: a master that hangs cannot stretch
        the launcher's exit past it."""
        if self._deadline is None:
            return 30.0
        return max(0.5, min(30.0, self._deadline - time.monotonic()))

    def _quarantine(self, rank: int, batch: list[Any], reasons: dict[int, str]) -> None:
        """Count the refused records and append each (once) to the run's quarantine file."""
        lines = []
        for i, why in sorted(reasons.items()):
            record = batch[i]
            key = (rank, _record_key(record))
            self.quarantined[key] = why
            if (*key, why) in self._logged:
                continue  # the same refusal, seen again after a retry or by an import
            self._logged.add((*key, why))
            seq = record.get("seq") if isinstance(record, dict) else None
            entry = {"rank": rank, "seq": seq, "reason": why, "time": time.time()}
            lines.append(json.dumps({**entry, "record": record}) + "\n")
        if lines:
            with open(self.run_dir / QUARANTINE_FILE, "a", encoding="utf-8") as fh:
                fh.write("".join(lines))

    # ------------------------------------------------------------------ the outcome
    def pending(self) -> int:
        """Records in the rank files past what was stored or quarantined."""
        return sum(
            _count_lines(events_path(self.run_dir, rank), self.offsets[rank]) for rank in self.ranks
        )

    def status(self) -> UploadStatus:
        pending, quarantined = self.pending(), len(self.quarantined)
        reasons = []
        if quarantined:
            first = next(iter(self.quarantined.values()))
            reasons.append(
                f"{quarantined} record(s) refused by the master, kept in {QUARANTINE_FILE} "
                f"(first: {first})"
            )
        if pending:
            reasons.append(f"{pending} record(s) not uploaded: {self.refused or self.last_error}")
        return UploadStatus(
            complete=not pending and not quarantined,
            uploaded=self.sent,
            quarantined=quarantined,
            pending=pending,
            reason="; ".join(reasons) or None,
            drain_seconds=self.drain_seconds,
        )

    def report(self, status: UploadStatus) -> dict[str, Any]:
        """Tell the master how the upload ended (``PUT /api/runs/{id}/upload``) and return its
        verdict (the status, checked against what it stores); raises UploadError when it could
        not be told (result.json still says it)."""
        try:
            resp = self.client.put(
                f"{self.base_url}/api/runs/{self.run_id}/upload",
                json=status.to_dict(),
                timeout=self._request_timeout(),
            )
        except httpx.HTTPError as exc:
            raise UploadError(f"master unreachable: {exc}") from exc
        if resp.status_code >= 400:
            raise UploadError(f"master refused the upload status: HTTP {resp.status_code}")
        try:
            verdict = resp.json().get("upload")
        except (ValueError, AttributeError):
            verdict = None
        mine = status.to_dict()
        if not isinstance(verdict, dict):
            return mine
        return {k: verdict.get(k, v) for k, v in mine.items()}

    # ------------------------------------------------------------------ background loop
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="mlbench-uploader", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        backoff = self.interval
        while not self._stop.is_set():
            try:
                self.poll_once()
                backoff = self.interval
            except UploadError as exc:
                self.failures += 1
                self.last_error = str(exc)
                backoff = min(self.max_backoff, backoff * 2)
            self._stop.wait(backoff)

    def finish(self, timeout: float = 60.0) -> bool:
        """Stop the loop, then drain what is left for up to ``timeout`` seconds: retrying
        while the master is down or busy, at once done when it refuses the upload itself.
        True when the upload is complete (see :meth:`status` for what is not)."""
        started = time.monotonic()
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._deadline = started + timeout
        backoff = 0.2
        try:
            while True:
                try:
                    self.poll_once()
                    break
                except UploadRefused as exc:
                    self.failures += 1
                    self.last_error = str(exc)
                    break
                except UploadError as exc:
                    self.failures += 1
                    self.last_error = str(exc)
                    if time.monotonic() + backoff > self._deadline:
                        break
                    time.sleep(backoff)
                    backoff = min(self.max_backoff, backoff * 2)
        finally:
            self.drain_seconds = round(time.monotonic() - started, 3)
        return self.status().complete

    def close(self) -> None:
        self.client.close()


def drain_and_report(uploader: Uploader, timeout: float) -> dict[str, Any]:
    """Drain ``uploader`` (bounded: records the master refuses are quarantined at once, so only
    an unreachable master waits out ``timeout``), tell the master how it ended, close it, and
    return the status as a dict (for result.json or a node's outcome file: the record survives
    a lost report)."""
    uploader.finish(timeout=timeout)
    status = uploader.status()
    try:
        uploader.report(status)
    except UploadError:
        pass  # the caller's record says it; `mlbench import` reports it again
    finally:
        uploader.close()
    return status.to_dict()


_EVENT_AT = re.compile(r"^events\[(\d+)\]\.?(.*)$")


def refused_records(resp: httpx.Response, size: int) -> dict[int, str]:
    """Which records of a refused batch of ``size`` the error locations name, with the reason
    for each; empty when any error is not located at a record (then the caller bisects).

    Two shapes name a record: pydantic's ``["body", "events", i, field...]`` and the master's
    own checks' ``["body", "events[i].field"]``."""
    try:
        detail = resp.json().get("detail")
    except (ValueError, AttributeError):
        return {}
    if not isinstance(detail, list) or not detail:
        return {}
    named: dict[int, str] = {}
    for err in detail:
        loc = err.get("loc") if isinstance(err, dict) else None
        if not isinstance(loc, list) or len(loc) < 2 or loc[0] != "body":
            return {}
        if loc[1] == "events" and len(loc) >= 3 and isinstance(loc[2], int):
            index, field = loc[2], ".".join(str(p) for p in loc[3:])
        elif isinstance(loc[1], str) and (m := _EVENT_AT.match(loc[1])):
            index, field = int(m.group(1)), m.group(2)
        else:
            return {}
        if not 0 <= index < size:
            return {}
        why = f"HTTP {resp.status_code}: {field or 'record'}: {err.get('msg', 'refused')}"
        named[index] = f"{named[index]}; {why}" if index in named else why
    return named


def _record_key(record: Any) -> str:
    """What identifies a refused record: its seq, or (no usable seq) its text."""
    seq = record.get("seq") if isinstance(record, dict) else None
    if isinstance(seq, int) and not isinstance(seq, bool):
        return str(seq)
    return json.dumps(record, sort_keys=True)


def _logged_refusals(path: Path) -> set[tuple[int, str, str]]:
    """(rank, record key, reason) of every refusal already in the quarantine file."""
    logged: set[tuple[int, str, str]] = set()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return logged
    for line in lines:
        try:
            entry = json.loads(line)
            logged.add((int(entry["rank"]), _record_key(entry["record"]), str(entry["reason"])))
        except (ValueError, KeyError, TypeError):
            continue  # a torn line: at worst a refusal is written twice
    return logged


def _count_lines(path: Path, offset: int) -> int:
    """Complete, non-blank lines after byte ``offset``."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return 0
    end = data.rfind(b"\n")
    return sum(1 for line in data[: end + 1].splitlines() if line.strip()) if end >= 0 else 0


def read_batch(path: Path, offset: int, limit: int) -> tuple[list[dict[str, Any]], int]:
    """Up to ``limit`` complete records after byte ``offset``, and the offset just past them."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            records: list[dict[str, Any]] = []
            pos = offset
            while len(records) < limit:
                line = fh.readline()
                if not line.endswith(b"\n"):
                    break  # EOF, or a line still being written
                pos += len(line)
                if line.strip():
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError:
                        continue  # torn by a crash and followed by later records
            return records, pos
    except FileNotFoundError:
        return [], offset
