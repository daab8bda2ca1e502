"""``mlbench report`` on real short runs: task 2a on a9a, 1 and 2 workers × 3 seeds.

The six runs are made once per module (a few seconds each) with the real CLI; a sweep.json in
the agreed layout is written beside them so both input forms (a sweep directory, run
directories) are checked, and must give the same numbers.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .helpers import mlbench, read_result

SEEDS = (1, 2, 3)
WORKERS = (1, 2)
FIGURES = ("time_to_accuracy", "scaling", "phases", "bytes_to_target", "cost_to_target")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, real_data: Path) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("home")
    runs_dir = home / "runs"
    points = []
    for w in WORKERS:
        for repeat, seed in enumerate(SEEDS):
            before = set(runs_dir.iterdir()) if runs_dir.exists() else set()
            args = ["run", "epsilon-logreg", "--workers", str(w), "--set", "data.dataset=a9a"]
            args += ["--goal", "light", "--set", f"seed={seed}", "--data-dir", str(real_data)]
            proc = mlbench(*args, "--runs-dir", str(runs_dir), home=home)
            assert proc.returncode == 0, proc.stderr[-2000:]
            (run_dir,) = set(runs_dir.iterdir()) - before
            points.append(
                {
                    "point": f"w{w}-allreduce",
                    "workers": w,
                    "algorithm": "allreduce",
                    "overrides": ["data.dataset=a9a"],
                    "repeat": repeat,
                    "seed": seed,
                    "run_id": run_dir.name,
                    "run_dir": str(run_dir),
                    "state": "finished",
                }
            )
    sweep_dir = home / "sweeps" / "s1"
    sweep_dir.mkdir(parents=True)
    doc = {
        "format": 1,
        "sweep_id": "s1",
        "task": "epsilon-logreg",
        "created": datetime.now(UTC).isoformat(),
        "command": ["mlbench", "sweep", "epsilon-logreg", "--workers", "1", "2", "--repeats", "3"],
        "runs_dir": str(runs_dir),
        "points": points,
    }
    (sweep_dir / "sweep.json").write_text(json.dumps(doc))
    return {"home": home, "dir": sweep_dir, "points": points}


def _report(sweep: dict[str, Any], out: Path, *inputs: str) -> Path:
    proc = mlbench("report", *inputs, "--out", str(out), home=sweep["home"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out / "report.html"


def _cells(html: str, col: str) -> list[float]:
    return [float(v) for v in re.findall(rf'data-col="{col}" data-value="([^"]+)"', html)]


def test_report_from_a_sweep_shows_the_runs_numbers(sweep: dict[str, Any], tmp_path: Path) -> None:
    page = _report(sweep, tmp_path, str(sweep["dir"]))
    html = page.read_text()
    for name in FIGURES:
        for ext in ("png", "svg"):
            assert (tmp_path / f"{name}.{ext}").stat().st_size > 1000, (name, ext)
        assert f'data-figure="{name}"' in html
    assert html.count("data:image/svg+xml;base64,") == len(FIGURES)
    # the medians shown are numpy's medians of the runs' own result.json values
    expected = []
    for w in WORKERS:
        ttt = [
            read_result(Path(p["run_dir"]))["summary"]["time_to_target"]
            for p in sweep["points"]
            if p["workers"] == w
        ]
        assert all(t is not None for t in ttt)  # the light goal is reached in every run
        expected.append(float(np.median(ttt)))
    assert _cells(html, "median") == expected
    assert _cells(html, "speedup")[1] == pytest.approx(expected[0] / expected[1])
    data = json.loads((tmp_path / "report.json").read_text())
    assert [c["time_to_target"]["n"] for c in data["configurations"]] == [3, 3]
    assert data["sweep_id"] == "s1"
    # every figure's caption says task, official status, hardware, software and repeats
    caption = data["provenance"]["caption"]
    for word in ("epsilon-logreg", "not official", "data.dataset", "Hardware", "torch", "Repeats"):
        assert word in caption
    assert "seed" not in caption  # an open key: repeats with their own seeds stay comparable
    svg = (tmp_path / "scaling.svg").read_text()
    assert "epsilon-logreg" in svg and "Repeats per configuration: 3" in svg


def test_run_dirs_give_the_same_numbers(sweep: dict[str, Any], tmp_path: Path) -> None:
    a = _report(sweep, tmp_path / "a", str(sweep["dir"]))
    b = _report(sweep, tmp_path / "b", *[p["run_dir"] for p in sweep["points"]])
    for col in ("median", "mean", "olympic", "speedup"):
        assert _cells(a.read_text(), col) == _cells(b.read_text(), col)


@pytest.mark.browser
def test_report_renders_offline_without_console_errors(
    sweep: dict[str, Any], tmp_path: Path, browser: Any
) -> None:
    page_path = _report(sweep, tmp_path, str(sweep["dir"]))
    errors: list[str] = []
    requests: list[str] = []
    page = browser.new_page()
    try:
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(page_path.as_uri())
        page.wait_for_load_state("load")
        sizes = page.eval_on_selector_all(
            "figure img", "imgs => imgs.map(i => [i.complete, i.naturalWidth])"
        )
    finally:
        page.close()
    assert errors == []
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
    assert len(sizes) == len(FIGURES) and all(ok and w > 100 for ok, w in sizes)


def test_bad_input_is_one_line(sweep: dict[str, Any], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = mlbench("report", str(empty), "--out", str(tmp_path / "o"), home=sweep["home"])
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "neither a sweep directory" in proc.stderr
    # a run of another task mixed in
    other = tmp_path / "other-run"
    other.mkdir()
    result = read_result(Path(sweep["points"][0]["run_dir"]))
    result["task"] = "cifar10-resnet20"
    (other / "result.json").write_text(json.dumps(result))
    proc = mlbench(
        "report", str(sweep["dir"]), str(other), "--out", str(tmp_path / "o"), home=sweep["home"]
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "different tasks" in proc.stderr
    proc = mlbench(
        "report",
        str(sweep["dir"]),
        "--out",
        str(tmp_path / "o"),
        "--node-type",
        "nope",
        home=sweep["home"],
    )
    assert proc.returncode == 2 and "not in the price table" in proc.stderr


def test_a_sweep_with_a_fault_axis_reports_the_cost_of_the_failure(
    real_data: Path, tmp_path: Path
) -> None:
    """A real sweep: 2a with and without a kill of rank 1 at step 30 (checkpoint every 20 steps,
    one engine restart); the report pairs the two and shows the difference of their result.json
    times to target as the cost, beside the killed run's own restart_cost_s."""
    runs, sweeps = tmp_path / "runs", tmp_path / "sweeps"
    argv = ["sweep", "epsilon-logreg", "--workers", "2", "--set", "data.dataset=a9a"]
    argv += ["--goal", "light", "--data-dir", str(real_data), "--threads-per-worker", "1"]
    argv += ["--set", "train.checkpoint_every_steps=20", "--max-restarts", "1"]
    argv += ["--fault", "none", "kill:rank=1,step=30", "--runs-dir", str(runs)]
    proc = mlbench(*argv, "--sweeps-dir", str(sweeps), "--sweep-id", "f", home=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    points = json.loads((sweeps / "f" / "sweep.json").read_text())["points"]
    assert [p["point"] for p in points] == [
        "w2-allreduce-nofault",
        "w2-allreduce-kill_rank1_step30",
    ]
    without, killed = (read_result(Path(p["run_dir"])) for p in points)
    assert without["faults"] == [] and killed["faults"][0]["spec"] == "kill:rank=1,step=30"
    assert len(killed["summary"]["restarts"]) == 1 and killed["goal"]["reached"]
    page = _report({"home": tmp_path}, tmp_path / "report", str(sweeps / "f"))
    html = page.read_text()
    assert 'data-figure="failure_cost"' in html and 'data-testid="failures"' in html
    assert (tmp_path / "report" / "failure_cost.png").stat().st_size > 10_000
    (row,) = json.loads((tmp_path / "report" / "report.json").read_text())["failures"]
    for key in ("time_to_target", "wall_time_to_target"):
        cost = killed["summary"][key] - without["summary"][key]
        assert row[key]["cost"] == pytest.approx(cost)
        assert _cells(html, "ttt_cost" if key == "time_to_target" else "wall_cost") == [
            pytest.approx(cost)
        ]
    assert row["restart_cost_s"]["median"] == killed["summary"]["restart_cost_s"] > 0
    assert row["checkpoint"] == "every 20 steps" and row["baseline_exact"]
