"""A real run started from the form, watched live in the browser; compare; download."""

from __future__ import annotations

import io
import json
import time
import zipfile

import pytest

from .conftest import api, plotted, screenshot, wait_ready

pytestmark = pytest.mark.browser

# a9a, light goal: evaluating every 50 steps and going on past the goal to step 1200 gives a few
# seconds of training (long enough to watch it arrive: the uploader sends once a second, and 400
# steps once ended within that on a fast machine) and curves with some shape; a window every 10
# steps, not every 50 ms, so the curves have points
OVERRIDES = [
    "data.dataset=a9a",
    "train.eval_every_steps=50",
    "train.stop_at_goal=false",
    "train.max_steps=1200",
    "train.log_every_seconds=0",
]
SWEEP = [2, 1]
created: dict[str, list[dict]] = {}  # the form's runs, reused by test_compare if it runs after


def seconds(s: float) -> str:
    """The dashboard's format of a duration under a minute (format.js fmtSeconds)."""
    if s < 1:
        return f"{s * 1000:.{2 if s < 0.01 else 1}f} ms"
    return f"{s:.{2 if s < 10 else 1}f} s"


def wait_finished(master, ids: list[str], timeout: float = 150) -> list[dict]:
    deadline = time.monotonic() + timeout
    with api(master) as c:
        while True:
            runs = [c.get(f"/api/runs/{i}").json() for i in ids]
            if all(r["state"] in ("finished", "failed", "cancelled") for r in runs):
                assert all(r["state"] == "finished" for r in runs), [r["reason"] for r in runs]
                return runs
            assert time.monotonic() < deadline, [r["state"] for r in runs]
            time.sleep(0.5)


def test_run_started_from_the_form_is_watched_live(dash, page_for) -> None:
    page = page_for(dash)
    page.goto(dash.url + "/#/new")
    page.get_by_test_id("f-task").select_option("epsilon-logreg")
    page.get_by_test_id("f-goal-light").check()
    page.get_by_test_id("f-sweep").fill(", ".join(map(str, SWEEP)))
    page.get_by_test_id("f-overrides").fill("\n".join(OVERRIDES))
    page.get_by_test_id("submit-run").click()

    links = page.get_by_test_id("created-run")
    links.first.wait_for()
    assert links.count() == len(SWEEP)
    with api(dash) as c:
        runs = [c.get(f"/api/runs/{links.nth(i).inner_text()}").json() for i in range(len(SWEEP))]
    assert [r["workers"] for r in runs] == SWEEP
    assert all(r["overrides"] == OVERRIDES and r["goal"] == "light" for r in runs)
    created["runs"] = runs
    run = runs[0]  # 2 workers
    links.first.click()
    page.wait_for_url(f"**/#/run/{run['id']}")

    # watch: what the page shows while the run is still running
    seen_running = {"loss": 0, "live": 0, "log": ""}
    log_pane = page.get_by_test_id("log")
    page.get_by_test_id("log-stderr").click()
    deadline = time.monotonic() + 150
    while True:
        state = page.get_by_test_id("state").inner_text()
        if state == "finished":
            break
        assert state in ("queued", "running"), state
        assert time.monotonic() < deadline, "the run did not finish"
        if state == "running":
            loss = page.get_by_test_id("chart-loss").get_attribute("data-points")
            seen_running["loss"] = max(seen_running["loss"], int(loss or 0))
            live = page.locator(".page").get_attribute("data-live-events")
            seen_running["live"] = max(seen_running["live"], int(live or 0))
            seen_running["log"] = seen_running["log"] or log_pane.inner_text()
        page.wait_for_timeout(200)
    assert seen_running["loss"] > 0, "no loss curve appeared while the run was running"
    assert seen_running["live"] > 0, "nothing arrived through the live stream"
    assert "[c10d]" in seen_running["log"], "no output appeared while the run was running"

    # finished: the page shows what the master recorded
    with api(dash) as c:
        final = c.get(f"/api/runs/{run['id']}").json()
        losses = {
            r: len(pts)
            for r, pts in c.get(
                f"/api/runs/{run['id']}/series", params={"kind": "train", "name": "loss"}
            )
            .json()["ranks"]
            .items()
        }
        phases = c.get(f"/api/runs/{run['id']}/phases").json()["ranks"]
    result = final["result"]
    assert result["goal"]["reached"] is True
    page.wait_for_function(
        "n => Number(document.querySelector('[data-testid=chart-loss]').dataset.points) === n",
        arg=sum(losses.values()),
    )
    loss_traces = plotted(page, "chart-loss")
    assert sorted(t["name"] for t in loss_traces) == [f"rank {r}" for r in sorted(losses)]
    assert [len(t["x"]) for t in loss_traces] == [losses[r] for r in sorted(losses)]

    metric = plotted(page, "chart-metric")
    crossing = next(t for t in metric if t["name"] == "target reached")
    val = next(t for t in metric if t["name"] == "val accuracy")
    assert crossing["y"][0] >= result["goal"]["threshold"]
    assert crossing["x"][0] in val["x"]  # the mark sits on the curve, at the evaluation
    first_above = next(y for y in val["y"] if y >= result["goal"]["threshold"])
    assert crossing["y"][0] == first_above  # ... the first one that met the goal

    assert page.get_by_test_id("card-reached").inner_text().splitlines()[1] == "yes"
    ttt = result["summary"]["time_to_target"]
    assert page.get_by_test_id("card-ttt").inner_text().splitlines()[1] == seconds(ttt)

    # phase bars: one per rank, the exact totals the master has
    wait_ready(page, "chart-phases")
    bars = plotted(page, "chart-phases")
    compute = next(t for t in bars if t["name"] == "compute")
    assert compute["y"] == [f"rank {r}" for r in sorted(phases, key=int)]
    for i, r in enumerate(sorted(phases, key=int)):
        p = phases[r]
        assert compute["x"][i] == pytest.approx(p["forward"] + p["backward"] + p["optimizer"])

    # the bytes axis: cumulative bytes each rank had sent at each logged step
    page.get_by_test_id("x-axis").select_option("bytes")
    page.wait_for_function(
        "() => document.querySelector('[data-testid=chart-loss]').layout.xaxis.title.text"
        ".startsWith('bytes')"
    )
    x_bytes = plotted(page, "chart-loss")[0]["x"]
    assert x_bytes == sorted(x_bytes) and x_bytes[-1] > 0
    assert max(x_bytes) <= result["summary"]["bytes_sent"]
    page.get_by_test_id("x-axis").select_option("time")

    # resource samples (when the workers record them) are drawn per worker
    with api(dash) as c:
        kinds = {m["kind"] for m in c.get(f"/api/runs/{run['id']}/metrics").json()["metrics"]}
    if "resource" in kinds:
        wait_ready(page, "chart-cpu")
        assert len(plotted(page, "chart-cpu")) == run["workers"]

    page.wait_for_timeout(500)  # let the last redraw settle for the screenshot
    screenshot(page, "run-detail")

    # download: the zip the master serves, fetched with the token
    with page.expect_download() as dl:
        page.get_by_test_id("btn-download").click()
    download = dl.value
    assert download.suggested_filename == f"{run['id']}.zip"
    with zipfile.ZipFile(io.BytesIO(open(download.path(), "rb").read())) as zf:
        names = zf.namelist()
        assert json.loads(zf.read(f"{run['id']}/result.json")) == result
    assert f"{run['id']}/events/rank-1.jsonl" in names


def test_compare_two_runs(dash, page_for) -> None:
    runs = created.get("runs")
    if runs is None:  # run on its own: make the same pair through the API
        with api(dash) as c:
            body = {
                "task": "epsilon-logreg",
                "goal": "light",
                "workers_sweep": SWEEP,
                "overrides": OVERRIDES,
            }
            runs = c.post("/api/runs", json=body).json()["runs"]
    runs = wait_finished(dash, [r["id"] for r in runs])
    by_k = {r["workers"]: r for r in runs}

    page = page_for(dash)
    page.goto(dash.url + "/#/runs")
    for r in runs:
        page.locator(f'tr[data-run-id="{r["id"]}"] [data-testid="run-select"]').check()
    screenshot(page, "runs")
    page.get_by_test_id("compare-selected").click()
    page.wait_for_url("**/#/compare?ids=*")
    page.wait_for_selector('.page[data-loaded="1"]')
    for testid in ("chart-cmp-loss", "chart-cmp-metric", "chart-speedup", "chart-cmp-phases"):
        wait_ready(page, testid)

    # curves of both runs on the common axis
    loss = plotted(page, "chart-cmp-loss")
    assert len(loss) == 2 and all(len(t["x"]) > 0 for t in loss)

    # speedup and efficiency from the runs' time to target, baseline: the 1-worker run
    t1 = by_k[1]["result"]["summary"]["time_to_target"]
    t2 = by_k[2]["result"]["summary"]["time_to_target"]
    speedup = next(t for t in plotted(page, "chart-speedup") if t["name"] != "ideal")
    assert speedup["x"] == [1, 2]
    assert speedup["y"] == pytest.approx([1.0, t1 / t2])
    eff = next(t for t in plotted(page, "chart-efficiency") if t["name"] != "ideal")
    assert eff["y"] == pytest.approx([100.0, 100 * t1 / t2 / 2])
    row2 = page.locator(f'[data-testid="compare-row"][data-run-id="{by_k[2]["id"]}"]')
    assert row2.locator('[data-col="speedup"]').inner_text() == f"{t1 / t2:.2f}×"

    # time to target split into phases: the train phases add up to it (the timer's remainder
    # is microseconds), the runs side by side
    bars = plotted(page, "chart-cmp-phases")
    step_groups = [t for t in bars if t["name"] in ("data", "compute", "communication")]
    labels = step_groups[0]["x"]
    assert len(labels) == 2 and not any(label.endswith("*") for label in labels)
    for r in runs:
        i = next(i for i, label in enumerate(labels) if r["id"][-6:] in label)
        total = sum(t["y"][i] for t in step_groups)
        assert total == pytest.approx(r["result"]["summary"]["time_to_target"], rel=0.05)
    screenshot(page, "compare")
