"""``mlbench.vocab`` is a bottom-layer module, and its words are the ones the layers above use."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import mlbench.vocab as vocab
from mlbench.telemetry.events import KINDS
from mlbench.train.timer import PHASES
from mlbench.train.timer import STEP_PHASES as TIMER_STEP_PHASES


def test_it_imports_nothing_of_mlbench_and_no_torch() -> None:
    tree = ast.parse(Path(vocab.__file__).read_text())
    imported = [
        name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for name in (
            [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        )
    ]
    assert all(not n.startswith(("mlbench", "torch")) for n in imported), imported
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, mlbench.vocab; print('torch' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert loaded == "False"


def test_members_are_their_wire_strings() -> None:
    assert vocab.Phase.DATA == "data" and f"{vocab.EventKind.PHASE}" == "phase"
    assert "goal_reached" in {r.value for r in vocab.StopReason}


def test_the_training_layers_use_the_same_words() -> None:
    """Until train/timer.py and telemetry import mlbench.vocab, they must agree with it."""
    assert tuple(vocab.PHASES) == tuple(PHASES)
    assert tuple(vocab.STEP_PHASES) == tuple(TIMER_STEP_PHASES)
    assert vocab.EVENT_KINDS == KINDS
