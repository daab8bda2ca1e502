"""benchmarks/gpu_images.py: without a CUDA device it stops at once with one line (status 2) and
records nothing; its ``--cpu --quick`` mode runs the 1a rows through the real CLI (slow)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ..e2e.helpers import REPO, cli_env

SCRIPT = REPO / "benchmarks" / "gpu_images.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_without_cuda_it_says_so_in_one_line(real_data: Path, tmp_path: Path) -> None:
    before = (REPO / "benchmarks" / "RESULTS.md").read_text()
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--data-dir", str(real_data)],
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0] and "--cpu" in lines[0]
    assert (REPO / "benchmarks" / "RESULTS.md").read_text() == before


@pytest.mark.slow  # three short 1a runs: ~40 s
def test_cpu_quick_mode_runs(real_data: Path, tmp_path: Path) -> None:
    before = (REPO / "benchmarks" / "RESULTS.md").read_text()
    cmd = [sys.executable, str(SCRIPT), "--cpu", "--quick", "--no-record"]
    proc = subprocess.run(
        [*cmd, "--data-dir", str(real_data)],
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[0] for r in rows[1:]] == [
        "| augment on CPU, fp32",
        "| augment on device, fp32",
        "| device + channels-last",
    ]
    assert all("failed" not in r for r in rows)
    assert (REPO / "benchmarks" / "RESULTS.md").read_text() == before
