"""A run with a million events: the page loads down-sampled series and stays responsive.

The events are written straight into the master's SQLite file by one INSERT ... SELECT per rank
(uploading a million events through the API would take minutes); the run is then marked running,
so the page also follows it live and can cancel it.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ..server.master import Master
from .conftest import api, plotted, screenshot, start_master, stop_master, wait_ready

pytestmark = pytest.mark.browser

EVENTS = 1_000_000
MAX_POINTS = 2000  # what the dashboard asks /series for (series.js)
WINDOWS = 44_600  # logging windows per rank: 2 ranks x ~11.2 events per window > EVENTS
LOAD_SECONDS = 20  # bound on opening the page until both curves are drawn (5-8 s on 2 vCPUs)

# (kind, name, unit, every, value as SQL over the window index i): one row per logging window,
# like a real worker's: train, the five step phases, comm; resources every 5th window;
# an evaluation every 100th
METRICS = [
    ("train", "loss", None, 1, "2.0 / (1 + i / 500.0) + 0.05 * (abs(random()) % 1000) / 1000.0"),
    ("train", "lr", None, 1, "0.1"),
    ("train", "throughput", "samples/s", 1, "2000 + abs(random()) % 100"),
    ("train", "train_time", "s", 1, "0.4"),
    ("phase", "data", "s", 1, "0.05"),
    ("phase", "forward", "s", 1, "0.1"),
    ("phase", "backward", "s", 1, "0.15"),
    ("phase", "communication", "s", 1, "0.08"),
    ("phase", "optimizer", "s", 1, "0.02"),
    ("comm", "bytes_sent", "B", 1, "1e6"),
    ("comm", "bytes_total", "B", 1, "1e6 * (i + 1)"),
    ("resource", "cpu_percent", "%", 5, "90 + abs(random()) % 10"),
    ("resource", "memory_rss", "B", 5, "5e8 + 1e3 * i"),
    ("resource", "net_sent", "B", 5, "2e5 * i"),
    ("resource", "net_recv", "B", 5, "2e5 * i"),
    ("phase", "eval", "s", 100, "1.0"),
    ("val", "accuracy", None, 100, "90.0 * i / (i + 3000)"),
    ("val", "loss", None, 100, "0.5"),
]
STRIDE = len(METRICS) + 1  # seq = 1 + i * STRIDE + j; the last slot: event/goal_reached


def crossing_window() -> int:
    """The first evaluated window whose accuracy meets the light goal (80)."""
    return next(i for i in range(99, WINDOWS, 100) if 90.0 * i / (i + 3000) >= 80)


def fill(db: str, run_id: str, ranks: int) -> int:
    t0 = time.time() - 0.5 * WINDOWS  # started hours ago, running now
    cross = crossing_window()
    conn = sqlite3.connect(db, timeout=60)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-400000")
    cases = " ".join(f"WHEN {j} THEN {expr}" for j, (*_, expr) in enumerate(METRICS))
    values = ", ".join(
        f"({j}, '{k}', '{n}', {'NULL' if u is None else repr(u)}, {every})"
        for j, (k, n, u, every, _) in enumerate(METRICS)
    )
    insert = "INSERT INTO events (run_id, rank, seq, time, step, epoch, kind, name, value, unit) "
    for rank in range(ranks):
        conn.execute(
            f"""WITH RECURSIVE w(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM w WHERE i < ?),
                m(j, kind, name, unit, every) AS (VALUES {values})
            {insert}
            SELECT ?, ?, 1 + i * {STRIDE} + j, ? + 0.5 * (i + 1) + (every = 100) * 0.2,
                   10 * (i + 1), (i + 1) / 100.0, kind, name, CASE j {cases} END, unit
            FROM w, m WHERE i % every = (CASE every WHEN 100 THEN 99 ELSE 0 END)
            ORDER BY i, j""",
            (WINDOWS - 1, run_id, rank, t0),
        )
        conn.executemany(
            insert + "VALUES (?, ?, ?, ?, ?, ?, 'event', ?, ?, NULL)",
            [
                (run_id, rank, 0, t0, 0, 0.0, "start", 0.0),
                (
                    run_id,
                    rank,
                    1 + cross * STRIDE + len(METRICS),
                    t0 + 0.5 * (cross + 1) + 0.2,
                    10 * (cross + 1),
                    (cross + 1) / 100.0,
                    "goal_reached",
                    90.0 * cross / (cross + 3000),
                ),
            ],
        )
    conn.execute(
        "UPDATE runs SET state = 'running', started_at = CURRENT_TIMESTAMP WHERE id = ?", (run_id,)
    )
    conn.commit()
    (total,) = conn.execute("SELECT count(*) FROM events WHERE run_id = ?", (run_id,)).fetchone()
    conn.close()
    return int(total)


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Master, str, int]]:
    m = start_master(tmp_path_factory.mktemp("big") / "home", "--no-scheduler")
    with api(m) as c:
        body = {"task": "epsilon-logreg", "workers": 2, "goal": "light"}
        run_id = c.post("/api/runs", json={**body, "overrides": ["data.dataset=a9a"]}).json()[
            "runs"
        ][0]["id"]
    total = fill(str(m.home / "mlbench.db"), run_id, ranks=2)
    assert total >= EVENTS
    yield m, run_id, total
    stop_master(m)


def test_million_event_run_stays_responsive(big, page_for) -> None:
    master, run_id, total = big
    page = page_for(master)
    responses: list[Any] = []
    page.on("response", lambda r: "/series?" in r.url and responses.append(r))

    started = time.monotonic()
    page.goto(f"{master.url}/#/run/{run_id}")
    wait_ready(page, "chart-loss", timeout=LOAD_SECONDS * 1000)
    wait_ready(page, "chart-metric", timeout=LOAD_SECONDS * 1000)
    elapsed = time.monotonic() - started
    assert elapsed < LOAD_SECONDS, f"the page took {elapsed:.1f} s to draw its curves"
    page.wait_for_selector('.page[data-loaded="1"]')

    # every series request is down-sampled on the server: <= MAX_POINTS per rank
    assert responses
    for res in responses:
        assert f"max_points={MAX_POINTS}" in res.url
        assert all(len(pts) <= MAX_POINTS for pts in res.json()["ranks"].values()), res.url
    loss = plotted(page, "chart-loss")
    assert len(loss) == 2
    assert all(MAX_POINTS // 2 < len(t["x"]) <= MAX_POINTS for t in loss)
    in_browser = page.evaluate(
        "[...document.querySelectorAll('[data-points]')].reduce((a, e) => a + +e.dataset.points, 0)"
    )
    assert in_browser < 40 * MAX_POINTS < total / 10

    # the goal metric with its crossing, resources per worker, the exact phase totals
    cross = crossing_window()
    star = next(t for t in plotted(page, "chart-metric") if t["name"] == "target reached")
    assert star["y"][0] == pytest.approx(90.0 * cross / (cross + 3000))
    for chart in ("chart-cpu", "chart-memory", "chart-network"):
        wait_ready(page, chart)
        assert len(plotted(page, chart)) >= 2
    wait_ready(page, "chart-phases")
    comm = next(t for t in plotted(page, "chart-phases") if t["name"] == "communication")
    assert comm["x"] == pytest.approx([0.08 * WINDOWS] * 2)

    # still responsive: the main thread answers at once, and redrawing on another axis is quick
    lag = page.evaluate(
        "new Promise(r => { const t = performance.now();"
        " setTimeout(() => r(performance.now() - t)) })"
    )
    assert lag < 1000
    started = time.monotonic()
    page.get_by_test_id("x-axis").select_option("step")
    page.wait_for_function(
        "document.querySelector('[data-testid=chart-loss]').layout.xaxis.title.text === 'step'"
    )
    assert time.monotonic() - started < 5
    assert max(plotted(page, "chart-loss")[0]["x"]) <= 10 * WINDOWS

    # it follows the run live, through a master restart: the page reconnects with the last
    # cursor (Last-Event-ID) and gets what arrived meanwhile, exactly once, and nothing older
    new = [
        {
            "run_id": run_id,
            "rank": 0,
            "seq": 10 * STRIDE * WINDOWS + k,
            "time": time.time(),
            "step": 10 * (WINDOWS + k + 1),
            "epoch": (WINDOWS + k + 1) / 100,
            "kind": "train",
            "name": "loss",
            "value": 0.01,
        }
        for k in range(3)
    ]
    before = int(page.get_by_test_id("chart-loss").get_attribute("data-points"))
    live = page.get_by_test_id("live-status")
    with page.watch.outage():
        master.kill()
        live.filter(has_text="reconnecting").wait_for()
        master.start()
        with api(master) as c:
            inserted = c.post(f"/api/runs/{run_id}/events", json={"events": new}).json()
        assert inserted["inserted"] == 3
        page.wait_for_function(
            "n => +document.querySelector('[data-testid=chart-loss]').dataset.points === n",
            arg=before + 3,
        )
        live.filter(has_text="live").wait_for()
    assert page.locator(".page").get_attribute("data-live-events") == "3"
    screenshot(page, "run-detail-1m-events")

    # cancel from the page
    page.once("dialog", lambda d: d.accept())
    page.get_by_test_id("btn-cancel").click()
    page.get_by_test_id("state").filter(has_text="cancelled").wait_for()
    with api(master) as c:
        assert c.get(f"/api/runs/{run_id}").json()["state"] == "cancelled"
