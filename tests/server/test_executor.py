"""server.executor.LocalExecutor.failure: why a launcher ended without a result.json (its log)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlbench.server.executor import LocalExecutor


def _ref(runs_dir: Path, run_id: str = "r1") -> dict:
    return {
        "kind": "local",
        "run_id": run_id,
        "pid": 1,
        "started": 0.0,
        "run_dir": str(runs_dir / run_id),
    }


@pytest.mark.parametrize(
    ("log", "reason"),
    [
        (
            "mlbench: error: cannot write the run directory /m/runs/r1: Not a directory\n",
            "cannot write the run directory /m/runs/r1: Not a directory",
        ),
        (
            'run r1: 2 worker(s)\nTraceback (most recent call last):\n  File "x.py", line 1\n'
            "RuntimeError: boom\n\n",
            "RuntimeError: boom",
        ),
        ("run r1: 2 worker(s) × 1 thread(s)\n", None),  # killed: no error line to report
        ("", None),
    ],
)
def test_failure_is_the_launchers_error_line(tmp_path: Path, log: str, reason: str | None) -> None:
    (tmp_path / "r1.launcher.log").write_text(log)
    assert LocalExecutor(tmp_path, "http://master").failure(_ref(tmp_path)) == reason


def test_failure_without_a_log_or_a_local_ref_is_none(tmp_path: Path) -> None:
    ex = LocalExecutor(tmp_path, "http://master")
    assert ex.failure(_ref(tmp_path)) is None
    assert ex.failure({"kind": "other"}) is None


def test_failure_reads_only_the_logs_tail(tmp_path: Path) -> None:
    (tmp_path / "r1.launcher.log").write_text("x" * 1_000_000 + "\nmlbench: error: late\n")
    assert LocalExecutor(tmp_path, "http://master").failure(_ref(tmp_path)) == "late"


def test_the_launcher_may_oversubscribe_what_the_operator_admitted(tmp_path: Path) -> None:
    """The master's --capacity-workers is the operator's decision, checked by the scheduler."""
    cmd = LocalExecutor(tmp_path, "http://master").command(
        "r1", tmp_path / "c.json", "t", 2, "gloo"
    )
    assert "--oversubscribe" in cmd


def test_failure_is_one_printable_bounded_line(tmp_path: Path) -> None:
    (tmp_path / "r1.launcher.log").write_text("mlbench: error: bad\x00byte " + "y" * 5000 + "\n")
    reason = LocalExecutor(tmp_path, "http://master").failure(_ref(tmp_path))
    assert reason is not None and reason.startswith("bad?byte y") and len(reason) < 1000
