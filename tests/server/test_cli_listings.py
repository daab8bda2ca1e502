"""``mlbench status`` (the run listing) with stdout piped: whole ids and names, ``--json`` parses.

rich wraps or cuts table cells to 80 columns when stdout is not a terminal; a run id cut with "…"
cannot be pasted into ``mlbench cancel``. The run is queued on a master without a scheduler, so it
stays in the listing without training anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from ..e2e.helpers import mlbench
from .master import Master


def test_status_listing_piped_keeps_ids_whole(master: Master, tmp_path: Path) -> None:
    body = {"task": "cifar10-resnet20", "workers": 2, "goal": "light", "algorithm": "powersgd"}
    resp = httpx.post(f"{master.url}/api/runs", json=body, headers=master.headers, timeout=30)
    assert resp.status_code < 300, resp.text
    [run] = resp.json()["runs"]
    env = {"MLBENCH_TOKEN": master.token, "MLBENCH_MASTER": master.url, "COLUMNS": "40"}

    table = mlbench("status", home=tmp_path, **env)
    assert table.returncode == 0, table.stderr
    assert "…" not in table.stdout
    [row] = [line for line in table.stdout.splitlines() if run["id"] in line]
    assert "cifar10-resnet20" in row and "powersgd" in row and "queued" in row

    listed = mlbench("status", "--json", home=tmp_path, **env)
    assert [r["id"] for r in json.loads(listed.stdout)] == [run["id"]]
