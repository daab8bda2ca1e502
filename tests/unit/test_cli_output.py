"""Listings with stdout piped (as in ``mlbench tasks | grep ...``): nothing cut, ``--json`` parses.

rich assumes 80 columns when stdout is not a terminal and used to wrap or cut cells with "…", so
``mlbench tasks | grep cifar10-resnet20`` found nothing. These run the real CLI in a subprocess
with stdout a pipe, and a narrow ``COLUMNS`` to make sure nothing narrows piped output again.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mlbench.registry import get_task, task_names

from ..e2e.helpers import cli_env

NARROW = {"COLUMNS": "40"}


def piped(*args: str, home: Path) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "mlbench.cli.main", *args],
        env=cli_env(home, **NARROW),
        capture_output=True,  # stdout is a pipe, not a terminal
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "…" not in proc.stdout
    return proc.stdout


def line_with(text: str, needle: str) -> str:
    lines = [line for line in text.splitlines() if needle in line]
    assert lines, f"{needle!r} not in:\n{text}"
    return lines[0]


def test_tasks_listing_keeps_every_name_and_cell_whole(tmp_path):
    out = piped("tasks", home=tmp_path)
    for name in task_names():
        spec = get_task(name).spec()
        row = line_with(out, f" {name} ")  # the whole name, on one line with its row
        assert spec["id"] in row and spec["dataset"] in row and spec["model"] in row
    assert "cifar10-resnet20" in out.split()


def test_tasks_json_parses(tmp_path):
    specs = json.loads(piped("tasks", "--json", home=tmp_path))
    assert [s["name"] for s in specs] == task_names()


def test_task_show_lists_every_key_whole(tmp_path):
    spec = get_task("cifar10-resnet20").spec()
    out = piped("tasks", "--show", "cifar10-resnet20", home=tmp_path)
    for item in spec["config"]:
        row = line_with(out, f" {item['key']} ")
        assert item["help"] in row
    shown = json.loads(piped("tasks", "--show", "cifar10-resnet20", "--json", home=tmp_path))
    assert shown["name"] == "cifar10-resnet20"


def test_task_show_lists_deviations(tmp_path):
    spec = get_task("wikitext2-lstm").spec()
    assert spec["deviations"]
    out = piped("tasks", "--show", "wikitext2-lstm", home=tmp_path)
    for deviation in spec["deviations"]:
        # rich may wrap a long sentence: compare without line breaks
        assert deviation in " ".join(out.split()), deviation
    shown = json.loads(piped("tasks", "--show", "wikitext2-lstm", "--json", home=tmp_path))
    assert shown["deviations"] == list(spec["deviations"])


def test_token_list_piped_and_json(tmp_path):
    name = "a-rather-long-token-label-for-the-nightly-ci-runner"
    proc = subprocess.run(
        [sys.executable, "-m", "mlbench.cli.main", "token", "create", "--name", name],
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout.strip()
    row = line_with(piped("token", "list", home=tmp_path), name)
    assert "admin" in row
    [token] = json.loads(piped("token", "list", "--json", home=tmp_path))
    assert token["name"] == name and token["scope"] == "admin"


def test_data_list_piped_and_json(tmp_path):
    out = piped("data", "list", home=tmp_path)
    rows = json.loads(piped("data", "list", "--json", home=tmp_path))
    assert {r["file"] for r in rows} >= {"a9a", "a9a.t"}
    for r in rows:
        assert r["sha256"] in line_with(out, r["url"])
