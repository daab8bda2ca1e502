"""Every page loads in a real browser; the token flow; the run form's validation; delete."""

from __future__ import annotations

import json

import pytest

from mlbench.server.dashboard import plotly_js

from .conftest import api, js, plotted, screenshot, wait_ready

pytestmark = pytest.mark.browser


def test_token_flow_and_every_page_loads(dash, page_for) -> None:
    page = page_for(dash, token=False)
    page.watch.expect(401)  # the first load, before the token is pasted
    res = page.goto(dash.url + "/#/runs")
    csp = res.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "connect-src 'self'" in csp
    with api(dash) as c:  # Plotly: the installed package's own file, compressed
        js_res = c.get("/static/plotly.min.js")
        assert js_res.headers["content-encoding"] == "gzip"
        assert js_res.content == plotly_js().read_bytes()

    # no token: the master refuses, and the page says so and how to fix it
    banner = page.get_by_test_id("banner")
    banner.wait_for(state="visible")
    assert banner.get_attribute("data-status") == "401"
    assert "mlbench token create" in banner.inner_text()

    page.get_by_test_id("token-toggle").click()
    page.get_by_test_id("token-input").fill(dash.token)
    page.get_by_test_id("token-save").click()
    page.wait_for_selector('.page[data-loaded="1"]')
    assert banner.is_hidden()
    assert page.evaluate("localStorage.getItem('mlbench.token')") == dash.token
    assert "✓" in page.get_by_test_id("token-toggle").inner_text()
    screenshot(page, "runs-empty")

    # Tasks: generated from the registry, every key of every task with its default
    with api(dash) as c:
        tasks = c.get("/api/tasks").json()
        algorithms = c.get("/api/algorithms").json()
    page.get_by_test_id("nav-tasks").click()
    page.wait_for_selector('[data-testid="task"]')
    assert page.locator('[data-testid="task"]').count() == len(tasks)
    for t in tasks:
        article = page.locator(f'[data-testid="task"][data-task="{t["name"]}"]')
        text = article.inner_text()
        facts = (t["dataset"], t["model"], t["target"]["metric"])
        for fact in (*facts, js(t["target"]["value"]), js(t["target"]["light_value"])):
            assert fact in text
        keys = article.locator("tr[data-key]").evaluate_all("rs => rs.map(r => r.dataset.key)")
        assert keys == [c["key"] for c in t["config"]]
        for c in t["config"]:
            if isinstance(c["default"], bool | int | str | None):  # shown as is
                shown = (
                    json.dumps(c["default"]) if not isinstance(c["default"], str) else c["default"]
                )
                row = article.locator(f'tr[data-key="{c["key"]}"] td').nth(1)
                assert row.inner_text() == shown, c
    algo_text = page.get_by_test_id("algorithms").inner_text()
    assert all(a["name"] in algo_text for a in algorithms)
    screenshot(page, "tasks")

    # New run: the registry's tasks, their goals, the master's capacity
    page.get_by_test_id("nav-new").click()
    page.get_by_test_id("f-task").select_option("epsilon-logreg")
    eps = next(t for t in tasks if t["name"] == "epsilon-logreg")
    assert js(eps["target"]["value"]) in page.get_by_test_id("task-goal").inner_text()
    assert js(eps["target"]["light_value"]) in page.get_by_test_id("task-light-goal").inner_text()
    assert page.get_by_test_id("f-workers").get_attribute("max") == "2"
    page.get_by_test_id("f-algorithm").select_option("powersgd")
    assert page.locator('[data-testid="opt-algorithm-matrix_rank"]').count() == 1
    screenshot(page, "new-run")

    # Compare with nothing selected explains itself
    page.get_by_test_id("nav-compare").click()
    page.get_by_test_id("compare-empty").wait_for(state="visible")


def test_run_form_validates_and_shows_the_servers_errors(dash, page_for) -> None:
    page = page_for(dash)
    page.watch.expect(422)
    posts: list[str] = []
    page.on("request", lambda r: r.method == "POST" and posts.append(r.url))
    with api(dash) as c:
        before = len(c.get("/api/runs", params={"limit": 1000}).json()["runs"])
    page.goto(dash.url + "/#/new?task=epsilon-logreg")
    submit = page.get_by_test_id("submit-run")

    # checked in the browser: nothing is sent
    page.get_by_test_id("f-workers").fill("3")  # capacity is 2
    lines = ["data.dataset=a9a", "not a pair", "data.datasetx=a9a", "goal=full"]
    page.get_by_test_id("f-overrides").fill("\n".join(lines))
    page.get_by_test_id("f-repeats").fill("0")
    submit.click()
    assert "1 to 2" in page.get_by_test_id("error-workers").inner_text()
    assert page.get_by_test_id("f-workers").get_attribute("aria-invalid") == "true"
    over = page.get_by_test_id("error-overrides").inner_text()
    assert "Line 2" in over and 'no config key "data.datasetx"' in over and "goal field" in over
    assert "1 to 100" in page.get_by_test_id("error-repeats").inner_text()
    page.get_by_test_id("f-sweep").fill("1, 2, x")
    submit.click()
    assert '"x"' in page.get_by_test_id("error-workers_sweep").inner_text()
    assert posts == []

    # checked by the master: its 422 messages appear next to the fields they concern
    page.get_by_test_id("f-sweep").fill("")
    page.get_by_test_id("f-workers").fill("2")
    page.get_by_test_id("f-repeats").fill("1")
    page.get_by_test_id("f-overrides").fill("data.dataset=a9a\noptim.lr=fast")
    page.get_by_test_id("f-algorithm").select_option("gossip")
    page.get_by_test_id("opt-algorithm-topology").fill("torus")
    with page.expect_response("**/api/runs") as resp:
        submit.click()
    assert resp.value.status == 422
    err = page.get_by_test_id("error-overrides")
    err.wait_for(state="visible")
    assert "optim.lr: expected a number, got 'fast'" in err.inner_text()

    page.get_by_test_id("f-overrides").fill("data.dataset=a9a")
    with page.expect_response("**/api/runs"):
        submit.click()
    # the master's complaint about the topology and this worker count, under the option
    topo = page.get_by_test_id("error-opt-algorithm-topology")
    topo.wait_for(state="visible")
    assert "torus" in topo.inner_text() and "2 does not" in topo.inner_text()
    assert page.get_by_test_id("error-overrides").is_hidden()
    screenshot(page, "new-run-errors")

    assert len(posts) == 2
    with api(dash) as c:
        assert len(c.get("/api/runs", params={"limit": 1000}).json()["runs"]) == before


def test_runs_table_updates_live_filters_sorts_and_a_failed_run_is_deleted(dash, page_for) -> None:
    page = page_for(dash)
    page.goto(dash.url + "/#/runs")
    page.wait_for_selector('.page[data-loaded="1"]')

    # two runs larger than the master's capacity: the scheduler fails them at once, and the
    # open table shows them appear and fail without a reload
    with api(dash) as c:
        ids = [
            c.post("/api/runs", json={"task": "epsilon-logreg", "workers": k}).json()["runs"][0][
                "id"
            ]
            for k in (3, 4)
        ]
    for run_id in ids:
        page.wait_for_selector(f'tr[data-run-id="{run_id}"][data-state="failed"]', timeout=15_000)
    with api(dash) as c:
        reason = c.get(f"/api/runs/{ids[1]}").json()["reason"]
    assert reason

    page.get_by_test_id("filter-state").select_option("failed")
    page.wait_for_function(
        "() => [...document.querySelectorAll('tr[data-testid=run-row]')]"
        ".every((r) => r.dataset.state === 'failed')"
    )
    rows = page.locator('tr[data-testid="run-row"]')

    def workers_column() -> list[int]:
        return [int(w) for w in rows.locator('td[data-col="workers"]').all_inner_texts()]

    assert rows.count() >= 2
    page.get_by_test_id("sort-workers").click()
    assert workers_column() == sorted(workers_column(), reverse=True)
    page.get_by_test_id("sort-workers").click()
    assert workers_column() == sorted(workers_column())
    assert "sort=workers" in page.url and "state=failed" in page.url  # a view can be linked
    page.get_by_test_id("filter-text").fill(ids[1])
    assert rows.count() == 1
    screenshot(page, "runs-filtered")

    # the failed run: its reason, and delete
    page.locator(f'tr[data-run-id="{ids[1]}"] [data-testid="run-link"]').click()
    page.get_by_test_id("state").filter(has_text="failed").wait_for()
    assert reason in page.get_by_test_id("run-reason").inner_text()
    assert page.get_by_test_id("btn-cancel").is_hidden()  # only live runs can be cancelled
    page.once("dialog", lambda d: d.accept())
    page.get_by_test_id("btn-delete").click()
    page.wait_for_url("**/#/runs")
    with api(dash) as c:
        assert c.get(f"/api/runs/{ids[1]}").status_code == 404


# text/event-stream as the master sends it, cut anywhere (a CRLF split in two included)
STREAM = (
    'event: state\r\ndata: {"state": "running"}\r\nid: 1_0_0\r\n\r\n'
    ": keep-alive\n\n"
    "event: log\ndata: line one\ndata: line two\nid: 2_5_0\n\n"
    "data: no event name\r\r"
    "event: end\nid: 3_5_0\ndata: {}\n\n"
)


def test_event_stream_parser_in_the_browser(dash, page_for) -> None:
    page = page_for(dash)
    page.goto(dash.url + "/#/tasks")
    results = page.evaluate(
        """async (text) => {
            const { EventStreamParser } = await import("/static/js/sse.js");
            const runs = [];
            for (let cut = 0; cut <= text.length; cut++) {
                const got = [];
                const p = new EventStreamParser((m) => got.push(m));
                p.push(text.slice(0, cut));
                p.push(text.slice(cut));
                runs.push(JSON.stringify(got));
            }
            return runs;
        }""",
        STREAM,
    )
    expected = [
        {"event": "state", "data": '{"state": "running"}', "id": "1_0_0"},
        {"event": "log", "data": "line one\nline two", "id": "2_5_0"},
        {"event": "message", "data": "no event name", "id": "2_5_0"},
        {"event": "end", "data": "{}", "id": "3_5_0"},
    ]
    assert all(json.loads(r) == expected for r in results), results[0]


def test_a_run_whose_upload_is_incomplete_says_so(dash, page_for) -> None:
    """Some of the run's events never reached the master (refused and quarantined, or not
    sent): its page says how many, so its charts and totals are not taken as the whole run."""
    result = {"schema_version": 1, "state": "finished", "task": "epsilon-logreg", "world_size": 2}
    upload = {"complete": False, "uploaded": 600, "quarantined": 1, "pending": 0}
    upload["reason"] = "1 record(s) refused by the master, kept in upload-quarantine.jsonl"
    with api(dash) as c:
        for run_id, up in (("upload-partial", upload), ("upload-whole", None)):
            body = {"run_id": run_id, "result": result | ({"upload": up} if up else {})}
            assert c.post("/api/runs/import", json=body).status_code == 200
    page = page_for(dash)
    page.goto(dash.url + "/#/run/upload-partial")
    page.wait_for_selector('.page[data-loaded="1"]')
    note = page.get_by_test_id("run-upload")
    assert note.is_visible()
    text = note.inner_text()
    assert "Upload incomplete" in text and "1 refused" in text and "mlbench import" in text
    screenshot(page, "run-upload-incomplete")
    page.goto(dash.url + "/#/run/upload-whole")
    page.wait_for_selector('.page[data-loaded="1"]')
    assert page.get_by_test_id("run-upload").is_hidden()


def test_a_straggler_is_marked_on_the_run_page(dash, page_for) -> None:
    """result.summary.stragglers flagged: the phase section says which rank and how slow, and
    the per-rank phase chart labels it; an unflagged run shows neither."""
    phases = {"data": 0.1, "forward": 0.2, "backward": 0.3, "communication": 0.1, "optimizer": 0.1}
    ranks = [{"rank": k, "steps": 100, "phases": phases} for k in (0, 1)]
    result = {"schema_version": 1, "state": "finished", "task": "epsilon-logreg", "world_size": 2}
    flagged = {"ratio": 3.2, "slowest_rank": 1, "threshold": 1.5, "flagged": True}
    unflagged = flagged | {"flagged": False}
    with api(dash) as c:
        for run_id, st in (("straggler-yes", flagged), ("straggler-no", unflagged)):
            summary = {"stragglers": st}
            body = {"run_id": run_id, "result": result | {"ranks": ranks, "summary": summary}}
            assert c.post("/api/runs/import", json=body).status_code == 200
    page = page_for(dash)
    page.goto(dash.url + "/#/run/straggler-yes")
    page.wait_for_selector('.page[data-loaded="1"]')
    note = page.get_by_test_id("stragglers")
    note.wait_for(state="visible")
    assert "rank 1" in note.inner_text() and "3.2" in note.inner_text()
    wait_ready(page, "chart-phases")
    labels = {y for t in plotted(page, "chart-phases") for y in t["y"]}
    assert labels == {"rank 0", "rank 1 (straggler)"}
    page.goto(dash.url + "/#/run/straggler-no")
    page.wait_for_selector('.page[data-loaded="1"]')
    wait_ready(page, "chart-phases")
    assert page.get_by_test_id("stragglers").is_hidden()
    assert {y for t in plotted(page, "chart-phases") for y in t["y"]} == {"rank 0", "rank 1"}
