"""docs/adding-a-task.md: its example task runs as an installed plug-in through the real CLI.

The code is taken from the document itself, so the walkthrough cannot drift from what works: it
is installed in a temporary site directory with an ``mlbench.tasks`` entry point (as pip would
leave it) and run on 2 workers to its light goal on scikit-learn's digits (no download).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]  # tests/e2e/ -> repo
DOC = REPO / "docs" / "adding-a-task.md"


def _example_code() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    [code] = [b for b in blocks if "class DigitsMLP" in b]
    return code


@pytest.fixture
def plugin_env(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "site"
    site.mkdir()
    (site / "my_tasks.py").write_text(_example_code())
    dist_info = site / "my_tasks-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-tasks\nVersion: 1.0\n")
    # the entry point the doc tells users to declare in their pyproject.toml
    toml = re.search(r'\[project\.entry-points\."mlbench\.tasks"\]\n(.*?)\n', DOC.read_text())
    assert toml is not None, "the doc no longer shows the entry-point declaration"
    name, target = (s.strip().strip('"') for s in toml.group(1).split("="))
    (dist_info / "entry_points.txt").write_text(f"[mlbench.tasks]\n{name} = {target}\n")
    return dict(os.environ, PYTHONPATH=str(site), MLBENCH_HOME=str(tmp_path / "home"))


def _cli(env: dict[str, str], *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlbench.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_doc_example_task_reaches_light_goal_on_two_workers(plugin_env: dict[str, str]):
    proc = _cli(plugin_env, "run", "digits-mlp", "--workers", "2", "--goal", "light", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["task"] == "digits-mlp" and result["state"] == "finished"
    assert result["world_size"] == 2 and result["official"] is True
    assert result["goal"]["metric"] == "accuracy" and result["goal"]["threshold"] == 90.0
    assert result["goal"]["reached"] is True
    summary = result["summary"]
    assert summary["stop_reason"] == "goal_reached"
    assert summary["final_metrics"]["accuracy"] >= 90.0
    assert summary["final_metrics"]["images"] == 297  # the whole validation split, all-reduced
    assert summary["throughput"] > 0
    assert [r["unit"] for r in result["ranks"]] == ["images", "images"]
    # equal training shards: both ranks took the same number of steps
    assert result["ranks"][0]["steps"] == result["ranks"][1]["steps"] == summary["steps"]


def test_doc_example_task_spec_lists_its_config(plugin_env: dict[str, str]):
    proc = _cli(plugin_env, "tasks", "--show", "digits-mlp", "--json", timeout=60)
    assert proc.returncode == 0, proc.stderr
    spec = json.loads(proc.stdout)
    assert spec["name"] == "digits-mlp" and spec["unit"] == "images"
    target = spec["target"]
    assert (target["metric"], target["value"], target["light_value"]) == ("accuracy", 97.0, 90.0)
    config = {item["key"]: item for item in spec["config"]}
    assert config["model.hidden"]["default"] == 64 and not config["model.hidden"]["open"]
    assert config["data.batch_size"]["default"] == 32
    assert config["data.val_batch_size"]["open"] is True
    assert config["optim.lr"]["default"] == 0.05 and config["optim.momentum"]["default"] == 0.9
    assert config["train.max_epochs"]["default"] == 30


def test_doc_example_task_rejects_unknown_key_before_start(
    plugin_env: dict[str, str], tmp_path: Path
):
    proc = _cli(plugin_env, "run", "digits-mlp", "--set", "model.nope=1", timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "model.nope" in lines[0] and "model.hidden" in lines[0]
    assert not list((tmp_path / "home").rglob("config.json")), "a run directory was created"
