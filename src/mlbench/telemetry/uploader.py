"""Loss-free event upload: tail the run's JSONL files, POST them to the master in batches.

Design (DESIGN §2): workers only ever append to their local file; this uploader runs in the
*launcher* process, in a thread, so training never waits on the network. It keeps a byte offset
per rank file and advances it only after the master acknowledged a batch. Any failure (master
down, restarting, slow) leaves the offset where it was and retries with exponential back-off;
because the master ingests idempotently by (run, rank, seq), re-sending a batch whose
acknowledgement was lost duplicates nothing. Nothing is lost either: the file is the source of
truth and the uploader catches up from it.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from mlbench.telemetry.events import events_path


class UploadError(RuntimeError):
    pass


class Uploader:
    def __init__(
        self,
        run_dir: Path,
        run_id: str,
        master_url: str,
        world_size: int,
        *,
        token: str | None = None,
        batch_size: int = 5000,
        interval: float = 1.0,
        max_backoff: float = 30.0,
    ) -> None:
        self.run_dir, self.run_id = Path(run_dir), run_id
        self.url = master_url.rstrip("/") + f"/api/runs/{run_id}/events"
        self.world_size = world_size
        self.batch_size, self.interval, self.max_backoff = batch_size, interval, max_backoff
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(headers=headers, timeout=30.0)
        self.offsets = [0] * world_size
        self.sent = 0
        self.failures = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ one pass
    def poll_once(self) -> int:
        """Upload everything new in every rank file; raises on the first failed batch."""
        uploaded = 0
        for rank in range(self.world_size):
            path = events_path(self.run_dir, rank)
            while True:
                records, end = read_batch(path, self.offsets[rank], self.batch_size)
                if not records:
                    self.offsets[rank] = end  # skip blank/torn-and-superseded lines
                    break
                self._post(records)
                self.offsets[rank] = end  # only past what the master acknowledged
                uploaded += len(records)
                self.sent += len(records)
        return uploaded

    def _post(self, records: list[dict[str, Any]]) -> None:
        try:
            resp = self.client.post(self.url, json={"events": records})
        except httpx.HTTPError as exc:
            raise UploadError(f"master unreachable: {exc}") from exc
        if resp.status_code >= 500 or resp.status_code in (408, 429):
            raise UploadError(f"master busy: HTTP {resp.status_code}")
        if resp.status_code >= 400:  # a permanent refusal: retrying cannot help
            raise UploadError(f"master refused events: HTTP {resp.status_code} {resp.text[:200]}")

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
        """Stop the loop, then drain what is left (retrying) for up to ``timeout`` seconds."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        deadline = time.monotonic() + timeout
        backoff = 0.2
        while True:
            try:
                self.poll_once()
                return True
            except UploadError as exc:
                self.failures += 1
                self.last_error = str(exc)
                if time.monotonic() + backoff > deadline:
                    return False
                time.sleep(backoff)
                backoff = min(self.max_backoff, backoff * 2)

    def close(self) -> None:
        self.client.close()


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
