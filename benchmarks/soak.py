"""The master under sustained load (issue 16 §4): simulated workers logging at 10 Hz for minutes,
uploaded the way a launcher uploads, while a dashboard client follows a run's live stream.

Everything on the path is the real one: a ``mlbench serve --no-scheduler`` subprocess (SQLite,
or a throwaway PostgreSQL 15 cluster), real HTTP, each rank's records written by the real
:class:`~mlbench.telemetry.events.EventWriter` to its ``rank-N.jsonl`` file, and one real
:class:`~mlbench.telemetry.uploader.Uploader` per run (the launcher's batching: every second,
one POST per rank with what is new in its file) in a thread, as the launcher runs it. What is
simulated is only the training: every tick (``1 / --hz`` s) each worker writes the 12 records a
real run writes per logged step (train loss/lr/train_time/throughput, five phase times, comm
bytes; ``benchmarks/ingest.py``'s STEP_RECORDS).

Measured, and why each says "the master holds up":

* **lost events**: after the writers stop and the uploaders drain, every (run, rank, seq) the
  writers numbered must be in the database exactly once (count, distinct seqs, min and max seq
  per rank), and every uploader must report its upload complete;
* **memory**: the master's RSS (psutil on its pid) sampled every second; "flat" means the mean of
  the last quarter is at most the first quarter's × 1.10 + 16 MiB (a leak of a few bytes per
  event would add hundreds of MiB over 10 minutes; allocator noise and SQLite's page cache add
  a few MiB and stop);
* **ingest latency**: every POST's round trip, timed in the uploader's own HTTP transport
  (p50/p99/max overall, and p99 per quarter: latency that climbs as the table grows is a
  problem a short benchmark cannot see);
* **the live stream**: a client follows ``GET /api/runs/{id}/stream?from_now=true`` of the
  first run the whole time, as the dashboard does; the largest gap between two ``events``
  messages, and the lag from an event's time to its arrival on the stream.

The machine's load average is recorded: on a shared box, other processes' load is part of what
the latencies say.

    python benchmarks/soak.py --quick --no-record        # ~10 s smoke test
    python benchmarks/soak.py                            # 64 workers × 10 Hz × 10 minutes, SQLite
    python benchmarks/soak.py --databases sqlite,postgres
    python benchmarks/soak.py --duration 60 --json out.json --no-record   # what the slow test runs
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from common import command_line  # type: ignore[import-not-found]
from ingest import (  # type: ignore[import-not-found]
    STEP_RECORDS,
    Master,
    database,
    machine,
    master,
    percentile,
)

RSS_FACTOR = 1.10  # last-quarter mean ≤ first-quarter mean × this + RSS_SLACK
RSS_SLACK = 16 * 2**20
RESULTS = Path(__file__).with_name("RESULTS.md")


# ---------------------------------------------------------------------------- instruments


class TimedTransport(httpx.HTTPTransport):
    """The uploader's transport, timing every events POST (request sent → answer read)."""

    def __init__(self, sink: list[tuple[float, float, int]], lock: threading.Lock) -> None:
        super().__init__()
        self.sink, self.lock = sink, lock

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        start = time.perf_counter()
        resp = super().handle_request(request)
        resp.read()
        if request.method == "POST":
            with self.lock:
                self.sink.append((start, time.perf_counter() - start, resp.status_code))
        return resp


@dataclass
class StreamWatch:
    """A dashboard's live stream of one run, read in a thread: when each ``events`` message
    arrived and how old its newest event was by then."""

    url: str
    headers: dict[str, str]
    run_id: str
    arrivals: list[float] = field(default_factory=list)  # perf_counter
    lags: list[float] = field(default_factory=list)  # arrival − newest event's time, s
    events: int = 0
    error: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        try:
            with (
                httpx.Client(headers=self.headers, timeout=httpx.Timeout(30.0)) as client,
                client.stream(
                    "GET", self.url, params={"from_now": "true", "logs": "false"}
                ) as resp,
            ):
                resp.raise_for_status()
                name = None
                for line in resp.iter_lines():
                    if self.stop.is_set():
                        return
                    if line.startswith("event:"):
                        name = line[6:].strip()
                    elif line.startswith("data:") and name == "events":
                        now_wall, now = time.time(), time.perf_counter()
                        data = json.loads(line[5:])
                        self.arrivals.append(now)
                        self.events += len(data["events"])
                        self.lags.append(now_wall - max(e["time"] for e in data["events"]))
                    elif line.startswith("data:") and name == "end":
                        self.error = f"the stream ended: {line[5:].strip()}"
                        return
        except Exception as exc:  # the thread reports; the soak's verdict says it
            if not self.stop.is_set():
                self.error = f"{type(exc).__name__}: {exc}"


def sample_master(pid: int, stop: threading.Event, out: list[tuple[float, int, float]]) -> None:
    """(perf_counter, RSS bytes, load average over 1 min) every second until ``stop``."""
    proc = psutil.Process(pid)
    while not stop.is_set():
        out.append((time.perf_counter(), proc.memory_info().rss, os.getloadavg()[0]))
        stop.wait(1.0)


# ---------------------------------------------------------------------------- workers


def write_ticks(
    writers: list[Any], hz: float, start: float, end: float, stop: threading.Event
) -> None:
    """One run's ranks: every tick each writes one logged step's records. Ticks keep to the
    schedule (a late tick is written at once, not skipped), so the offered load is exact."""
    tick, step = 0, 0
    while not stop.is_set():
        at = start + tick / hz
        if at >= end:
            return
        if (wait := at - time.perf_counter()) > 0:
            stop.wait(wait)
        step += 10
        for w in writers:
            items = [
                (kind, name, scale * (0.5 + 0.5 * ((step + w.rank) % 7) / 7), unit)
                for kind, name, unit, scale in STEP_RECORDS
            ]
            w.emit_many(items, step=step, epoch=step / 195)
        tick += 1


def create_runs(m: Master, runs: int, ranks: int) -> list[str]:
    resp = httpx.post(
        f"{m.url}/api/runs",
        json={"task": "epsilon-logreg", "workers": ranks, "repeats": runs},
        headers=m.headers,
        timeout=60,
    )
    resp.raise_for_status()
    return [r["id"] for r in resp.json()["runs"]]


def stored_per_rank(m: Master, run_ids: list[str]) -> dict[tuple[str, int], tuple[int, ...]]:
    """(run, rank) → (rows, distinct seqs, min seq, max seq), straight from the database."""
    from sqlalchemy import create_engine, text

    engine = create_engine(m.database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT run_id, rank, count(*), count(DISTINCT seq), min(seq), max(seq) "
                    "FROM events GROUP BY run_id, rank"
                )
            ).all()
    finally:
        engine.dispose()
    return {(r[0], int(r[1])): tuple(int(x) for x in r[2:]) for r in rows if r[0] in run_ids}


# ---------------------------------------------------------------------------- one soak


def soak(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    from mlbench.telemetry.events import EventWriter
    from mlbench.telemetry.uploader import Uploader

    with ExitStack() as stack:
        home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mlbench-soak-")))
        m = stack.enter_context(master(home, stack.enter_context(database(kind, args))))
        run_ids = create_runs(m, args.runs, args.ranks)
        posts: list[tuple[float, float, int]] = []
        lock = threading.Lock()
        writers, uploaders = [], []
        for run_id in run_ids:
            run_dir = home / "runs" / run_id
            run_dir.mkdir(parents=True)
            writers.append(
                [EventWriter(run_dir / f"rank-{r}.jsonl", run_id, r) for r in range(args.ranks)]
            )
            uploaders.append(
                Uploader(
                    run_dir,
                    run_id,
                    m.url,
                    args.ranks,
                    token=m.headers["Authorization"].split()[1],
                    transport=TimedTransport(posts, lock),
                )
            )
        stop, sampler_stop = threading.Event(), threading.Event()
        samples: list[tuple[float, int, float]] = []
        sampler = threading.Thread(target=sample_master, args=(m.pid, sampler_stop, samples))
        watch = StreamWatch(f"{m.url}/api/runs/{run_ids[0]}/stream", m.headers, run_ids[0])
        watcher = threading.Thread(target=watch.run, daemon=True)
        sampler.start()
        watcher.start()
        time.sleep(1.0)  # the stream is open (from_now) before the first record is written
        for u in uploaders:
            u.start()
        start = time.perf_counter()
        end = start + args.duration
        threads = [
            threading.Thread(target=write_ticks, args=(ws, args.hz, start, end, stop))
            for ws in writers
        ]
        try:
            for t in threads:
                t.start()
            for t in threads:
                while t.is_alive():
                    t.join(timeout=1.0)
        except KeyboardInterrupt:
            stop.set()
            raise
        finally:
            stop.set()
            written_end = time.perf_counter()
            drained = [u.finish(timeout=120) for u in uploaders]
            drain_s = time.perf_counter() - written_end
            time.sleep(2 * 0.5 + 1.0)  # two stream polls: the last events reach the client
            watch.stop.set()
            sampler_stop.set()
            sampler.join()
            statuses = [u.status() for u in uploaders]
            for u in uploaders:
                u.close()
            for ws in writers:
                for w in ws:
                    w.close()

        written = {
            (run_id, w.rank): w.seq for run_id, ws in zip(run_ids, writers, strict=True) for w in ws
        }
        stored = stored_per_rank(m, run_ids)
    return summarise(
        kind,
        args,
        start,
        written_end,
        drain_s,
        posts,
        samples,
        watch,
        written,
        stored,
        drained,
        statuses,
    )


def summarise(
    kind: str,
    args: argparse.Namespace,
    start: float,
    end: float,
    drain_s: float,
    posts: list[tuple[float, float, int]],
    samples: list[tuple[float, int, float]],
    watch: StreamWatch,
    written: dict[tuple[str, int], int],
    stored: dict[tuple[str, int], tuple[int, ...]],
    drained: list[bool],
    statuses: list[Any],
) -> dict[str, Any]:
    lost = dup = extra = 0
    for key, n in written.items():
        rows, distinct, lo, hi = stored.get(key, (0, 0, 0, -1))
        lost += max(0, n - distinct)
        dup += rows - distinct
        extra += max(0, hi - (n - 1)) + max(0, -lo)
    total = sum(written.values())
    wall = end - start
    ok = [(t, lat) for t, lat, status in posts if status == 200]
    failed = sum(1 for _, _, status in posts if status != 200)
    lat_ms = [1000 * lat for _, lat in ok]
    quarter = wall / 4
    by_quarter = [
        [1000 * lat for t, lat in ok if start + q * quarter <= t < start + (q + 1) * quarter]
        for q in range(4)
    ]
    in_window = [(t, rss, load) for t, rss, load in samples if start <= t <= end]
    q_rss = [
        [rss for t, rss, _ in in_window if start + q * quarter <= t < start + (q + 1) * quarter]
        for q in range(4)
    ]
    rss_first, rss_last = statistics.mean(q_rss[0]), statistics.mean(q_rss[-1])
    # the gaps while records were written, the stretch from the last message to the end
    # included: a stream that died early shows as one long gap
    arrivals = [a for a in watch.arrivals if a <= end]
    marks = [start, *arrivals, end]
    gaps = [b - a for a, b in itertools.pairwise(marks)]
    return {
        "database": kind,
        "workers": len(written),
        "runs": args.runs,
        "hz": args.hz,
        "duration": wall,
        "events_written": total,
        "events_per_s": total / wall,
        "lost": lost,
        "duplicates": dup,
        "unexpected": extra,
        "uploads_complete": all(drained) and all(s.complete for s in statuses),
        "drain_s": drain_s,
        "posts": len(posts),
        "failed_posts": failed,
        "latency_ms": {
            "p50": percentile(lat_ms, 50),
            "p99": percentile(lat_ms, 99),
            "max": max(lat_ms),
            "p99_by_quarter": [percentile(q, 99) if q else None for q in by_quarter],
        },
        "rss_mib": {
            "start": in_window[0][1] / 2**20,
            "end": in_window[-1][1] / 2**20,
            "max": max(rss for _, rss, _ in in_window) / 2**20,
            "first_quarter_mean": rss_first / 2**20,
            "last_quarter_mean": rss_last / 2**20,
            "flat": rss_last <= rss_first * RSS_FACTOR + RSS_SLACK,
            "series": [(round(t - start, 1), round(rss / 2**20, 1)) for t, rss, _ in in_window],
        },
        "load": {
            "mean": statistics.mean(load for _, _, load in in_window),
            "max": max(load for _, _, load in in_window),
        },
        "stream": {
            "messages": len(watch.arrivals),
            "events": watch.events,
            "events_written": sum(n for (run, _), n in written.items() if run == watch.run_id),
            "max_gap_s": max(gaps) if gaps else None,
            "lag_p50_s": percentile(watch.lags, 50) if watch.lags else None,
            "lag_max_s": max(watch.lags) if watch.lags else None,
            "error": watch.error,
        },
    }


# ---------------------------------------------------------------------------- report


def table(results: list[dict[str, Any]]) -> str:
    head = [
        "database",
        "workers × Hz × records",
        "minutes",
        "events/s",
        "events stored",
        "lost",
        "POSTs (failed)",
        "p50 ms",
        "p99 ms",
        "max ms",
        "p99 ms by quarter",
        "RSS MiB start / end / max",
        "RSS flat",
        "stream max gap s",
        "stream lag p50 / max s",
        "load avg mean / max",
    ]
    rows = []
    for r in results:
        lat, rss, st = r["latency_ms"], r["rss_mib"], r["stream"]
        quarters = " / ".join("-" if q is None else f"{q:.0f}" for q in lat["p99_by_quarter"])
        rows.append(
            [
                r["database"],
                f"{r['workers']} × {r['hz']:g} × {len(STEP_RECORDS)}",
                f"{r['duration'] / 60:.1f}",
                f"{r['events_per_s']:,.0f}",
                f"{r['events_written'] - r['lost']:,} of {r['events_written']:,}",
                f"{r['lost']} {'✓' if r['lost'] == 0 and r['uploads_complete'] else '✗'}",
                f"{r['posts']:,} ({r['failed_posts']})",
                f"{lat['p50']:.0f}",
                f"{lat['p99']:.0f}",
                f"{lat['max']:.0f}",
                quarters,
                f"{rss['start']:.0f} / {rss['end']:.0f} / {rss['max']:.0f}",
                f"{rss['first_quarter_mean']:.0f} → {rss['last_quarter_mean']:.0f} "
                f"{'✓' if rss['flat'] else '✗'}",
                "-" if st["max_gap_s"] is None else f"{st['max_gap_s']:.2f}",
                "-"
                if st["lag_p50_s"] is None
                else f"{st['lag_p50_s']:.2f} / {st['lag_max_s']:.1f}",
                f"{r['load']['mean']:.2f} / {r['load']['max']:.2f}",
            ]
        )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke test: 2 runs × 4 ranks, 5 s")
    p.add_argument("--databases", default="sqlite", help="comma-separated: sqlite,postgres")
    p.add_argument("--runs", type=int, help="runs, each with its own uploader (8; quick 2)")
    p.add_argument("--ranks", type=int, help="workers per run (8; quick 4)")
    p.add_argument("--hz", type=float, default=10.0, help="logged steps per second per worker")
    p.add_argument("--duration", type=float, help="seconds of writing (600; quick 5)")
    p.add_argument("--json", type=Path, help="also write the figures here (the slow test reads it)")
    p.add_argument(
        "--pg-no-fsync", action="store_true", help="PostgreSQL with fsync=off (as the tests)"
    )
    p.add_argument("--no-record", action="store_true", help="don't append to RESULTS.md")
    args = p.parse_args()
    args.runs = args.runs or (2 if args.quick else 8)
    args.ranks = args.ranks or (4 if args.quick else 8)
    args.duration = args.duration or (5.0 if args.quick else 600.0)
    args.databases = [d.strip() for d in args.databases.split(",") if d.strip()]
    if unknown := set(args.databases) - {"sqlite", "postgres"}:
        p.error(f"unknown database(s) {sorted(unknown)}; choose from sqlite, postgres")
    if args.duration < 4:
        p.error("--duration must be ≥ 4 s (the memory check compares quarters)")

    env = machine()
    print(env, file=sys.stderr)
    results = []
    for kind in args.databases:
        t = time.monotonic()
        results.append(soak(kind, args))
        print(f"{kind}: done in {time.monotonic() - t:.0f} s", file=sys.stderr)
    text = table(results)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if not args.no_record:
        with open(RESULTS, "a", encoding="utf-8") as fh:
            fh.write(
                f"\n## Master soak — {time.strftime('%Y-%m-%d')}\n\nMachine: {env}.\n\n"
                f"```sh\n{command_line()}\n```\n\n{text}\n"
            )
        print(f"appended to {RESULTS}", file=sys.stderr)
    bad = [r for r in results if r["lost"] or not r["uploads_complete"] or r["duplicates"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
