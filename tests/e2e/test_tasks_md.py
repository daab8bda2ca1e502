"""docs/tasks.md is generated from the task classes: it must equal what the code generates now.

A changed default, help text, goal or deviation without regenerating the page fails here, with
the command that regenerates it. The page is produced by the real CLI in a subprocess, exactly as
the command in its header does.
"""

from __future__ import annotations

import difflib
import subprocess
import sys
from pathlib import Path

from mlbench.cli.tasks import REGENERATE
from mlbench.registry import TASKS, get_task

from .helpers import REPO, cli_env

DOC = REPO / "docs" / "tasks.md"


def _generated(home: Path) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "mlbench.cli.main", "tasks", "--markdown"],
        env=cli_env(home),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_tasks_md_is_up_to_date(tmp_path: Path) -> None:
    want = _generated(tmp_path)
    have = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
    if have != want:
        diff = "".join(
            list(
                difflib.unified_diff(
                    have.splitlines(keepends=True),
                    want.splitlines(keepends=True),
                    "docs/tasks.md",
                    "generated",
                )
            )[:40]
        )
        raise AssertionError(
            f"docs/tasks.md is out of date with the task classes; regenerate it from the "
            f"repository root with `PYTHONPATH=src {REGENERATE}`:\n{diff}"
        )


def test_tasks_md_lists_every_task_with_its_deviations() -> None:
    text = DOC.read_text(encoding="utf-8")
    for name in TASKS:
        spec = get_task(name).spec()
        assert f"## {spec['id']} `{name}`" in text
        for deviation in spec["deviations"]:
            assert f"- {deviation}\n" in text
    assert get_task("wikitext2-lstm").deviations, "3a's documented departures went missing"
