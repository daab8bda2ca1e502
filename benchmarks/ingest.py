"""Master ingest: events/s and write latency with 8 and 32 concurrent uploaders, and the
down-sampled series query over a 1,000,000-point metric, on SQLite and PostgreSQL.

Targets (issue tracker): ≥ 50,000 events/s batched, p99 write latency < 100 ms, < 200 ms per
series query.

Per database it starts a real master (``mlbench serve --no-scheduler``) in a subprocess, on a
SQLite file or on a throwaway PostgreSQL 15 cluster with the server defaults (fsync on), and makes
an admin token the way a user does (``mlbench token create``). For each uploader count, that many
separate processes (spawn) each upload to their own run, like the launcher's uploader (one per
run, so concurrency means many runs at once). They post batches of the records a real run writes,
12 per logged step (train loss/lr/train_time/throughput, five phase times, comm bytes):

* back-to-back: after a warm-up, every uploader posts its next batch as soon as the previous one
  is acknowledged, for a fixed time. events/s = events inserted by the requests started in the
  window ÷ (end of the last of them − window start). Latency here is mostly queueing: with every
  uploader waiting on the master, p50 ≈ uploaders × batch ÷ throughput.
* paced: each uploader posts one batch every interval, at a random phase, where the interval makes
  the offered load ``--paced-load`` (default 50 %) of the back-to-back rate. This gives
  p50/p99/max latency at a load the master can sustain. Latency is timed from the scheduled send
  time, so a late send counts against the master.
* checks: each response says inserted == batch size, the database holds exactly the events sent
  to each run, and re-posting an acknowledged batch inserts 0 (idempotence).

Series: one run is filled with N points of one metric (train/loss, rank 0) by 5,000-event POSTs
(the launcher's batch size) from a few uploader processes, which also measures large-batch
ingest. Then ``GET /api/runs/{id}/series?kind=train&name=loss&max_points=1000`` is timed
``--queries`` times.

    python benchmarks/ingest.py --quick --no-record   # < 1 min smoke test (see --help for sizes)
    python benchmarks/ingest.py                       # full: 20 s windows, 1,000,000 points
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import queue
import random
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

TARGET_RATE = 50_000.0  # events/s
TARGET_P99_MS = 100.0
TARGET_SERIES_MS = 200.0
MAX_POINTS = 1000
# The series is filled with the launcher's batch size. The master's documented maximum, 10,000,
# fails on PostgreSQL (HTTP 500: 10 columns × 10,000 rows > 65,535 bind parameters).
FILL_BATCH = 5_000
MAX_BATCH = 10_000
MAX_RETRIES = 30
RESULTS = Path(__file__).with_name("RESULTS.md")

# what a real run writes per logged step (rank-N.jsonl of a 1a/2a run): kind, name, unit, scale
STEP_RECORDS: list[tuple[str, str, str | None, float]] = [
    ("train", "loss", None, 2.3),
    ("train", "lr", None, 0.1),
    ("train", "train_time", "s", 30.0),
    ("train", "throughput", "samples/s", 400.0),
    ("phase", "data", "s", 0.05),
    ("phase", "forward", "s", 2.8),
    ("phase", "backward", "s", 4.2),
    ("phase", "communication", "s", 0.35),
    ("phase", "optimizer", "s", 0.02),
    ("comm", "bytes_sent", "B", 1.1e7),
    ("comm", "bytes_total", "B", 2.2e7),
    ("comm", "compression_ratio", None, 1.0),
]
LOG_EVERY_STEPS = 10
STEPS_PER_EPOCH = 195


class BenchmarkError(RuntimeError):
    pass


# ---------------------------------------------------------------------------- records


def step_batch(run_id: str, seq0: int, n: int, t0: float, rng: random.Random) -> bytes:
    """``n`` records from ``seq0`` of one rank, as a training run logs them; the request body."""
    events = []
    for seq in range(seq0, seq0 + n):
        logged, j = divmod(seq, len(STEP_RECORDS))
        kind, name, unit, scale = STEP_RECORDS[j]
        step = LOG_EVERY_STEPS * (logged + 1)
        rec: dict[str, Any] = {
            "run_id": run_id,
            "rank": 0,
            "seq": seq,
            "time": round(t0 + 0.7 * step, 6),
            "step": step,
            "epoch": round(step / STEPS_PER_EPOCH, 6),
            "kind": kind,
            "name": name,
            "value": scale * (0.5 + rng.random()),
        }
        if unit is not None:
            rec["unit"] = unit
        events.append(rec)
    return json.dumps({"events": events}, separators=(",", ":")).encode()


def loss_batch(run_id: str, seq0: int, seq1: int, t0: float) -> bytes:
    """train/loss at every step ``seq0 .. seq1-1`` of rank 0 (one metric, for the series)."""
    events = [
        {
            "run_id": run_id,
            "rank": 0,
            "seq": s,
            "time": round(t0 + 0.05 * s, 6),
            "step": s,
            "epoch": round(s / STEPS_PER_EPOCH, 6),
            "kind": "train",
            "name": "loss",
            "value": 0.1 + 2.2 * math.exp(-s / 200_000) + 0.01 * math.sin(s),
        }
        for s in range(seq0, seq1)
    ]
    return json.dumps({"events": events}, separators=(",", ":")).encode()


# ---------------------------------------------------------------------------- uploader processes


def _post(client: httpx.Client, url: str, body: bytes, n: int, inserted: int) -> int:
    """POST one batch of ``n`` events; the master must acknowledge ``inserted`` new ones. A 5xx or
    a connection error is retried with back-off, as the launcher's uploader does; returns the
    number of failed attempts."""
    failures, backoff = 0, 0.1
    while True:
        try:
            resp = client.post(url, content=body, headers={"Content-Type": "application/json"})
            status, text = resp.status_code, resp.text
        except httpx.TransportError as exc:
            status, text = 0, repr(exc)
        if status == 200:
            break
        if 400 <= status < 500 and status not in (408, 429):
            raise BenchmarkError(f"POST {url}: HTTP {status} {text[:300]}")
        failures += 1
        if failures > MAX_RETRIES:
            raise BenchmarkError(
                f"POST {url}: {failures} failures, last HTTP {status} {text[:300]}"
            )
        time.sleep(backoff)
        backoff = min(2.0, 2 * backoff)
    got = resp.json()
    # after a failure the earlier attempt may have been stored; the final count check covers it
    if got["received"] != n or (failures == 0 and got["inserted"] != inserted):
        raise BenchmarkError(f"POST {url}: {n} events, {inserted} new, but the master said {got}")
    return failures


def _sleep_until(t: float) -> None:
    while (left := t - time.perf_counter()) > 0:
        time.sleep(min(left, 0.05))


def _upload(job: dict[str, Any], index: int, jobs: Any, results: Any) -> dict[str, Any]:
    """One run's uploader: warm-up; on "go" a back-to-back window, then a paced one."""
    rng = random.Random(index)
    url = f"{job['url']}/api/runs/{job['run_id']}/events"
    batch, t0 = job["batch"], time.time()
    seq = 0

    def wait() -> Any:
        got = jobs.get()
        if got is None:
            raise BenchmarkError("stopped before the measurement")
        return got

    with httpx.Client(headers=job["headers"], timeout=300.0) as client:

        def send(body: bytes | None = None) -> tuple[float, float, int]:
            nonlocal seq
            body = body or step_batch(job["run_id"], seq, batch, t0, rng)
            start = time.perf_counter()
            failures = _post(client, url, body, batch, batch)
            seq += batch
            return start, time.perf_counter(), failures

        first = step_batch(job["run_id"], 0, batch, t0, random.Random(index))
        warm_end = time.perf_counter() + job["warmup"]
        while send()[1] < warm_end:  # at least one batch each
            pass
        results.put(("ready", index, None))

        start_at, end_at = wait()
        _sleep_until(start_at)
        back_to_back = []  # (sent, acknowledged, failed attempts)
        while time.perf_counter() < end_at:
            back_to_back.append(send())
        results.put(("drained", index, back_to_back))

        start_at, end_at, interval = wait()
        paced = []  # (scheduled send time, acknowledged, failed attempts)
        scheduled = start_at + rng.uniform(0, interval)
        while scheduled < end_at:
            body = step_batch(job["run_id"], seq, batch, t0, rng)  # ready before its time
            _sleep_until(scheduled)
            _, end, failures = send(body)
            paced.append((scheduled, end, failures))
            scheduled += interval
        if _post(client, url, first, batch, 0):  # a retried batch: nothing is inserted twice
            raise BenchmarkError("the idempotence check needs a POST that did not fail")
    return {"sent": seq, "paced": paced}


def _fill(job: dict[str, Any]) -> dict[str, Any]:
    url = f"{job['url']}/api/runs/{job['run_id']}/events"
    latencies, first, last, t0, failures = [], math.inf, 0.0, 1.8e9, 0
    with httpx.Client(headers=job["headers"], timeout=300.0) as client:
        for seq0, seq1 in job["ranges"]:
            body = loss_batch(job["run_id"], seq0, seq1, t0)
            start = time.perf_counter()
            failures += _post(client, url, body, seq1 - seq0, seq1 - seq0)
            end = time.perf_counter()
            first, last = min(first, start), end
            latencies.append(end - start)
    return {"start": first, "end": last, "latencies": latencies, "failures": failures}


def _worker(index: int, jobs: Any, results: Any) -> None:
    while True:
        job = jobs.get()
        if job is None:
            return
        try:
            out = _upload(job, index, jobs, results) if job["mode"] == "upload" else _fill(job)
            results.put(("done", index, out))
        except BaseException:
            results.put(("error", index, traceback.format_exc()))


class Pool:
    """Uploader processes (spawn), started once and reused for every measurement."""

    def __init__(self, n: int) -> None:
        ctx = mp.get_context("spawn")
        self.results = ctx.Queue()
        self.jobs = [ctx.Queue() for _ in range(n)]
        self.procs = [
            ctx.Process(target=_worker, args=(i, self.jobs[i], self.results), daemon=True)
            for i in range(n)
        ]
        for p in self.procs:
            p.start()

    def collect(self, kind: str, workers: int, timeout: float) -> dict[int, Any]:
        out: dict[int, Any] = {}
        deadline = time.monotonic() + timeout
        while len(out) < workers:
            try:
                got, index, value = self.results.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise BenchmarkError(f"uploaders: {len(out)}/{workers} {kind} in time") from None
            if got == "error":
                raise BenchmarkError(f"uploader {index} failed:\n{value}")
            if got != kind:
                raise BenchmarkError(f"uploader {index}: expected {kind}, got {got}")
            out[index] = value
        return out

    def close(self) -> None:
        for q in self.jobs:
            q.put(None)
        # keep draining: a process exits only once what it put on the queue has been read
        deadline = time.monotonic() + 30
        while any(p.is_alive() for p in self.procs) and time.monotonic() < deadline:
            with suppress(queue.Empty):
                self.results.get(timeout=0.1)
        for p in self.procs:
            if p.is_alive():
                p.terminate()
            p.join()


# ---------------------------------------------------------------------------- the master


@dataclass
class Master:
    url: str
    headers: dict[str, str]
    pid: int
    database_url: str


@contextmanager
def master(home: Path, database_url: str | None) -> Iterator[Master]:
    """``mlbench serve --no-scheduler`` in a subprocess, and an admin token for it."""
    from mlbench.launch.local import free_port

    env = dict(os.environ, MLBENCH_HOME=str(home))
    env.pop("MLBENCH_DATABASE_URL", None)
    if database_url:
        env["MLBENCH_DATABASE_URL"] = database_url
    cli = [sys.executable, "-m", "mlbench.cli.main"]
    # the token first: it also creates and migrates the database
    token = subprocess.run(
        [*cli, "token", "create", "--name", "ingest-benchmark"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    port = free_port()
    log_path = home / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*cli, "serve", "--no-scheduler", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchmarkError(f"master did not start:\n{log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        yield Master(
            url,
            {"Authorization": f"Bearer {token}"},
            proc.pid,
            database_url or f"sqlite:///{home / 'mlbench.db'}",
        )
    except BaseException:
        lines = [ln[:300] for ln in log_path.read_text().splitlines() if '" 200 OK' not in ln]
        print("master log, last lines:\n" + "\n".join(lines[-40:]), file=sys.stderr)
        raise
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def create_runs(m: Master, n: int) -> list[str]:
    resp = httpx.post(
        f"{m.url}/api/runs",
        json={"task": "epsilon-logreg", "workers": 1, "repeats": n},
        headers=m.headers,
        timeout=60,
    )
    resp.raise_for_status()
    return [r["id"] for r in resp.json()["runs"]]


def stored_counts(m: Master, run_ids: list[str]) -> dict[str, int]:
    """Events per run, straight from the database."""
    from sqlalchemy import create_engine, func, select

    from mlbench.server.models import Event

    engine = create_engine(m.database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(Event.run_id, func.count())
                .where(Event.run_id.in_(run_ids))
                .group_by(Event.run_id)
            )
            counts = {r[0]: int(r[1]) for r in rows}
    finally:
        engine.dispose()
    return {r: counts.get(r, 0) for r in run_ids}


def cpu_seconds(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


# ---------------------------------------------------------------------------- measurements


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def latency_stats(seconds: list[float]) -> dict[str, float]:
    ms = [1000 * s for s in seconds]
    return {
        "p50": percentile(ms, 50),
        "p99": percentile(ms, 99),
        "max": max(ms),
        "n": len(ms),
    }


def measure_uploads(pool: Pool, m: Master, n: int, args: argparse.Namespace) -> dict[str, Any]:
    runs = create_runs(m, n)
    for i, run_id in enumerate(runs):
        job = {"mode": "upload", "url": m.url, "headers": m.headers, "run_id": run_id}
        pool.jobs[i].put({**job, "batch": args.batch, "warmup": args.warmup})
    pool.collect("ready", n, timeout=600)

    # back-to-back: everyone posts as fast as the master acknowledges
    start_at = time.perf_counter() + 0.2
    end_at = start_at + args.duration
    for i in range(n):
        pool.jobs[i].put((start_at, end_at))
    cpu = _cpu_between(m.pid, start_at, end_at)
    requests = [r for rs in pool.collect("drained", n, timeout=600).values() for r in rs]
    rate = len(requests) * args.batch / (max(r[1] for r in requests) - start_at)

    # paced at a fraction of that rate: every uploader one batch per interval, random phase
    interval = n * args.batch / (args.paced_load * rate)
    start_at = time.perf_counter() + 0.2
    window = max(args.paced_duration, interval)
    for i in range(n):
        pool.jobs[i].put((start_at, start_at + window, interval))
    paced_cpu = _cpu_between(m.pid, start_at, start_at + window)
    out = pool.collect("done", n, timeout=600 + window)
    paced = [r for o in out.values() for r in o["paced"]]

    sent = {runs[i]: o["sent"] for i, o in out.items()}
    stored = stored_counts(m, runs)
    return {
        "uploaders": n,
        "back_to_back": {
            "rate": rate,
            "cpu": cpu,
            "failures": sum(r[2] for r in requests),
            **latency_stats([end - start for start, end, _ in requests]),
        },
        "paced": {
            "rate": len(paced) * args.batch / window,
            "offered": n * args.batch / interval,
            "interval": interval,
            "cpu": paced_cpu,
            "failures": sum(r[2] for r in paced),
            **latency_stats([end - scheduled for scheduled, end, _ in paced]),
        },
        "sent": sum(sent.values()),
        "stored": sum(stored.values()),
        "lossless": sent == stored,
    }


def _cpu_between(pid: int, start: float, end: float) -> float:
    """The process's CPU time from ``start`` to ``end`` (perf_counter), per wall second."""
    _sleep_until(start)
    before = cpu_seconds(pid)
    _sleep_until(end)
    return (cpu_seconds(pid) - before) / (end - start)


def measure_series(pool: Pool, m: Master, args: argparse.Namespace) -> dict[str, Any]:
    (run_id,) = create_runs(m, 1)
    ranges = [
        (s, min(s + FILL_BATCH, args.series_points))
        for s in range(0, args.series_points, FILL_BATCH)
    ]
    workers = min(args.fill_uploaders, len(pool.procs), len(ranges))
    for w in range(workers):
        job = {"mode": "fill", "url": m.url, "headers": m.headers, "run_id": run_id}
        pool.jobs[w].put({**job, "ranges": ranges[w::workers]})
    out = pool.collect("done", workers, timeout=3600)
    fill_wall = max(o["end"] for o in out.values()) - min(o["start"] for o in out.values())
    stored = stored_counts(m, [run_id])[run_id]
    if stored != args.series_points:
        raise BenchmarkError(f"series run holds {stored} events, sent {args.series_points}")

    times, points = [], 0
    with httpx.Client(headers=m.headers, timeout=120) as client:
        for _ in range(args.queries):
            start = time.perf_counter()
            resp = client.get(
                f"{m.url}/api/runs/{run_id}/series",
                params={"kind": "train", "name": "loss", "max_points": MAX_POINTS},
            )
            times.append(time.perf_counter() - start)
            resp.raise_for_status()
            pts = resp.json()["ranks"]["0"]
            points = len(pts)
            # every stride-th point from the first, plus the last one (the latest value)
            if not 0 < points <= MAX_POINTS + 1 or pts[0][0] != 0:
                raise BenchmarkError(f"series: {points} points, first {pts[:1]}")
    return {
        "points": args.series_points,
        "fill_rate": args.series_points / fill_wall,
        "fill_uploaders": workers,
        "fill_p99": latency_stats([t for o in out.values() for t in o["latencies"]])["p99"],
        "fill_failures": sum(o["failures"] for o in out.values()),
        "median": 1000 * statistics.median(times),
        "max": 1000 * max(times),
        "returned": points,
    }


def _pgcluster(*names: str) -> tuple[Any, ...]:
    """Names from ``tests/support/pgcluster.py`` (the tests' throwaway PostgreSQL cluster).

    It is test infrastructure, not part of the installed package, so it is imported from this
    checkout: the benchmark runs as ``python benchmarks/ingest.py``, with only ``benchmarks/`` on
    ``sys.path``.
    """
    import importlib

    repo = str(Path(__file__).resolve().parents[1])
    if repo not in sys.path:
        sys.path.insert(0, repo)
    module = importlib.import_module("tests.support.pgcluster")
    return tuple(getattr(module, n) for n in names)


@contextmanager
def database(kind: str, args: argparse.Namespace) -> Iterator[str | None]:
    """None for SQLite (the master's default file), or a fresh PostgreSQL database URL."""
    if kind == "sqlite":
        yield None
        return
    create_database, throwaway_postgres = _pgcluster("create_database", "throwaway_postgres")

    with throwaway_postgres(fsync=not args.pg_no_fsync) as server:
        yield create_database(server, "mlbench_bench")


def run_database(kind: str, pool: Pool, args: argparse.Namespace) -> dict[str, Any]:
    with ExitStack() as stack:
        home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mlbench-ingest-")))
        url = stack.enter_context(database(kind, args))
        m = stack.enter_context(master(home, url))
        result: dict[str, Any] = {"database": kind, "uploads": []}
        for n in args.uploaders:
            t = time.monotonic()
            r = measure_uploads(pool, m, n, args)
            result["uploads"].append(r)
            print(f"{kind}, {n} uploaders: done in {time.monotonic() - t:.0f} s", file=sys.stderr)
        t = time.monotonic()
        result["series"] = measure_series(pool, m, args)
        print(f"{kind}, series: done in {time.monotonic() - t:.0f} s", file=sys.stderr)
        return result


# ---------------------------------------------------------------------------- report


def _ratio(value: float, target: float, higher_is_better: bool) -> str:
    ok = value >= target if higher_is_better else value <= target
    return f"{value / target:.2f}× {'✓' if ok else '✗'}"


def tables(
    results: list[dict[str, Any]], args: argparse.Namespace
) -> list[tuple[list[str], list[list[str]]]]:
    ingest_head = [
        "database",
        "uploaders",
        "load",
        "events/s",
        f"vs {TARGET_RATE:,.0f}/s",
        "p50 ms",
        "p99 ms",
        f"vs {TARGET_P99_MS:.0f} ms",
        "max ms",
        "master CPU",
        "failed POSTs",
        "stored = sent",
    ]
    ingest: list[list[str]] = []
    for res in results:
        for u in res["uploads"]:
            s, p = u["back_to_back"], u["paced"]
            check = f"{u['stored']:,} {'✓' if u['lossless'] else '✗ LOSS'}"
            ingest.append(
                [
                    res["database"],
                    str(u["uploaders"]),
                    "back-to-back",
                    f"{s['rate']:,.0f}",
                    _ratio(s["rate"], TARGET_RATE, True),
                    f"{s['p50']:.0f}",
                    f"{s['p99']:.0f}",
                    _ratio(s["p99"], TARGET_P99_MS, False),
                    f"{s['max']:.0f}",
                    f"{100 * s['cpu']:.0f} %",
                    str(s["failures"]),
                    check,
                ]
            )
            ingest.append(
                [
                    res["database"],
                    str(u["uploaders"]),
                    f"paced, {p['offered']:,.0f}/s offered (1 batch/{p['interval']:.2g} s each)",
                    f"{p['rate']:,.0f}",
                    "",
                    f"{p['p50']:.0f}",
                    f"{p['p99']:.0f}",
                    _ratio(p["p99"], TARGET_P99_MS, False),
                    f"{p['max']:.0f}",
                    f"{100 * p['cpu']:.0f} %",
                    str(p["failures"]),
                    "retry: 0 new ✓",
                ]
            )
    series_head = [
        "database",
        "points",
        "fill events/s (uploaders × batch)",
        "fill p99 ms",
        "fill failed POSTs",
        "query median ms",
        "query max ms",
        f"vs {TARGET_SERIES_MS:.0f} ms",
        "returned",
    ]
    series = [
        [
            res["database"],
            f"{s['points']:,}",
            f"{s['fill_rate']:,.0f} ({s['fill_uploaders']} × {FILL_BATCH:,})",
            f"{s['fill_p99']:.0f}",
            str(s["fill_failures"]),
            f"{s['median']:.0f}",
            f"{s['max']:.0f}",
            _ratio(s["median"], TARGET_SERIES_MS, False),
            str(s["returned"]),
        ]
        for res in results
        for s in [res["series"]]
    ]
    return [(ingest_head, ingest), (series_head, series)]


def markdown(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def machine() -> str:
    import psutil

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = psutil.virtual_memory().total / 2**30
    return f"{os.cpu_count()} vCPUs {cpu}, {mem:.0f} GB, Python {platform.python_version()}"


def software(args: argparse.Namespace) -> str:
    import sqlite3
    from importlib.metadata import version

    (PG_BIN,) = _pgcluster("PG_BIN")

    parts = [f"uvicorn {version('uvicorn')}", f"FastAPI {version('fastapi')}"]
    parts += [f"pydantic {version('pydantic')}", f"SQLAlchemy {version('sqlalchemy')}"]
    parts.append(f"SQLite {sqlite3.sqlite_version} (WAL, synchronous=NORMAL)")
    if "postgres" in args.databases:
        try:
            out = subprocess.run(
                [str(PG_BIN / "postgres"), "--version"], capture_output=True, text=True, check=True
            ).stdout
            found = re.search(r"\(PostgreSQL\)\s+(\S+)", out)
            pg = found.group(1) if found else out.strip()
        except (OSError, subprocess.CalledProcessError):
            pg = "?"
        parts.append(
            f"PostgreSQL {pg} ({'fsync off' if args.pg_no_fsync else 'defaults, fsync on'})"
        )
    return ", ".join(parts)


def record(args: argparse.Namespace, environment: str, text: str) -> None:
    command = "python benchmarks/ingest.py " + shlex.join(sys.argv[1:])
    mode = "quick" if args.quick else "full"
    intro = (
        f"Measured with `benchmarks/ingest.py` against a real `mlbench serve --no-scheduler` "
        f"subprocess (one uvicorn process) on the same machine as the uploaders. "
        f"Machine: {environment}."
    )
    blocks = [intro, f"```sh\n{command.strip()}\n```", *text.split("\n\n")]
    wrapped = [
        b if b.startswith(("|", "```")) else textwrap.fill(b, 100, break_on_hyphens=False)
        for b in blocks
    ]
    section = f"\n## Master ingest ({mode}) — {time.strftime('%Y-%m-%d')}\n\n"
    with open(RESULTS, "a", encoding="utf-8") as fh:
        fh.write(section + "\n\n".join(wrapped) + "\n")


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """Print the tables (rich when available); return them as Markdown with their notes."""
    (ih, ir), (sh, sr) = tables(results, args)
    notes = (
        f"Batches of {args.batch:,} events, one run per uploader process. Back-to-back: "
        f"{args.duration:g} s after a {args.warmup:g} s warm-up, every uploader posting its next "
        f"batch as soon as the last one is acknowledged. events/s is events inserted ÷ wall time, "
        f"and latency is per request. Paced: for ≥ {args.paced_duration:g} s, each uploader posts "
        f"one batch per interval at a random phase, offering {100 * args.paced_load:.0f} % of the "
        f"back-to-back rate. Latency is timed from the scheduled send. 'failed POSTs' counts "
        f"attempts answered with a 5xx or a connection error. They are retried with back-off, as "
        f"the launcher's uploader does, and latency includes the retries. The retry check "
        f"re-posts each uploader's first batch. 'master CPU' is the master process's CPU "
        f"time ÷ wall time, where 100 % is one core. Series: one run filled with train/loss at "
        f"every step of rank 0, then `GET /series?kind=train&name=loss&max_points={MAX_POINTS}` "
        f"{args.queries} times, the first included."
    )
    if args.series_points < 1_000_000:
        notes += f" The series has {args.series_points:,} points here, not 1,000,000."
    try:
        from rich.console import Console
        from rich.table import Table

        console = Console() if sys.stdout.isatty() else Console(width=180)
        for title, head, rows in (("Ingest", ih, ir), ("Series query", sh, sr)):
            table = Table(title=title)
            for h in head:
                table.add_column(h, justify="left" if h in ("database", "load") else "right")
            for r in rows:
                table.add_row(*r)
            console.print(table)
        console.print(notes, style="dim")
    except ImportError:
        print(markdown(ih, ir) + "\n\n" + markdown(sh, sr) + "\n\n" + notes)
    return markdown(ih, ir) + "\n\n" + markdown(sh, sr) + "\n\n" + notes


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 1 s windows, 100-event batches, 10,000 points",
    )
    p.add_argument(
        "--databases", default="sqlite,postgres", help="comma-separated: sqlite,postgres"
    )
    p.add_argument("--uploaders", default="8,32", help="uploader process counts (default 8,32)")
    p.add_argument("--batch", type=int, help="events per POST (1000; quick 100)")
    p.add_argument("--duration", type=float, help="back-to-back window, s (20; quick 1)")
    p.add_argument("--paced-duration", type=float, help="paced window, s (20; quick 1)")
    p.add_argument(
        "--paced-load", type=float, default=0.5, help="paced: fraction of back-to-back rate (0.5)"
    )
    p.add_argument("--warmup", type=float, help="s of back-to-back posting before (2; quick 0.2)")
    p.add_argument(
        "--series-points", type=int, help="points of the series (1,000,000; quick 10,000)"
    )
    p.add_argument("--fill-uploaders", type=int, default=4, help="processes filling the series")
    p.add_argument("--queries", type=int, default=5, help="timed series queries (5)")
    p.add_argument(
        "--pg-no-fsync", action="store_true", help="PostgreSQL with fsync=off (as the tests)"
    )
    p.add_argument("--no-record", action="store_true", help="don't append to RESULTS.md")
    args = p.parse_args()
    quick = args.quick
    args.duration = args.duration or (1.0 if quick else 20.0)
    args.paced_duration = args.paced_duration or (1.0 if quick else 20.0)
    args.warmup = args.warmup if args.warmup is not None else (0.2 if quick else 2.0)
    args.series_points = args.series_points or (10_000 if quick else 1_000_000)
    args.batch = args.batch or (100 if quick else 1000)
    args.databases = [d.strip() for d in args.databases.split(",") if d.strip()]
    args.uploaders = [int(n) for n in args.uploaders.split(",")]
    if unknown := set(args.databases) - {"sqlite", "postgres"}:
        p.error(f"unknown database(s) {sorted(unknown)}; choose from sqlite, postgres")
    if not 1 <= args.batch <= MAX_BATCH or min(args.uploaders) < 1 or max(args.uploaders) > 100:
        p.error("--batch must be 1..10000 and uploader counts 1..100")

    environment = f"{machine()}; {software(args)}"
    print(environment, file=sys.stderr)
    start = time.monotonic()
    pool = Pool(max(*args.uploaders, args.fill_uploaders))
    try:
        results = [run_database(kind, pool, args) for kind in args.databases]
    finally:
        pool.close()
    text = report(results, args)
    print(f"total {time.monotonic() - start:.0f} s", file=sys.stderr)
    if not args.no_record:
        record(args, environment, text)
        print(f"appended to {RESULTS}", file=sys.stderr)
    bad = [r["database"] for r in results for u in r["uploads"] if not u["lossless"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
