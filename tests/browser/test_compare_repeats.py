"""Compare groups repeats (runs that differ only in the seed) into one configuration and draws
the median speedup and efficiency with min–max error bars over the repeats."""

from __future__ import annotations

import statistics

import pytest

from .conftest import api, wait_ready
from .test_live_run import wait_finished

pytestmark = pytest.mark.browser

SEEDS = (11, 12)


def error_bars(page, testid: str) -> dict:
    return page.evaluate(
        """(id) => {
             const t = document.querySelector(`[data-testid="${id}"]`).data
               .find((t) => t.name !== "ideal");
             return {x: Array.from(t.x), y: Array.from(t.y),
                     plus: Array.from(t.error_y.array), minus: Array.from(t.error_y.arrayminus)};
           }""",
        testid,
    )


def test_compare_draws_median_and_min_max_over_repeats(dash, page_for) -> None:
    ids = []
    with api(dash) as c:
        for seed in SEEDS:
            body = {
                "task": "epsilon-logreg",
                "goal": "light",
                "workers_sweep": [2, 1],
                "overrides": ["data.dataset=a9a", f"seed={seed}"],
            }
            ids += [r["id"] for r in c.post("/api/runs", json=body).json()["runs"]]
    runs = wait_finished(dash, ids)
    t = {
        k: [r["result"]["summary"]["time_to_target"] for r in runs if r["workers"] == k]
        for k in (1, 2)
    }
    t0 = statistics.median(t[1])
    speedup = t0 / statistics.median(t[2])

    page = page_for(dash)
    page.goto(dash.url + f"/#/compare?ids={','.join(ids)}")
    page.wait_for_selector('.page[data-loaded="1"]')
    wait_ready(page, "chart-speedup")
    wait_ready(page, "chart-efficiency")
    # one configuration (the seed is not part of it): one speedup trace with two points
    sp = error_bars(page, "chart-speedup")
    assert sp["x"] == [1, 2]
    assert sp["y"] == pytest.approx([1.0, speedup])
    assert sp["plus"] == pytest.approx([0.0, t0 / min(t[2]) - speedup])
    assert sp["minus"] == pytest.approx([0.0, speedup - t0 / max(t[2])])
    ef = error_bars(page, "chart-efficiency")
    assert ef["y"] == pytest.approx([100.0, 100 * speedup / 2])
    assert ef["plus"][1] == pytest.approx(100 * (t0 / min(t[2]) - speedup) / 2)
    assert "median over repeats" in page.get_by_test_id("scaling-note").inner_text()
