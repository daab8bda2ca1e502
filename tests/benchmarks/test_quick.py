"""Every benchmark script runs in --quick mode (a smoke test: no thresholds asserted, since CI
machines are too noisy for ratios; the numbers live in benchmarks/RESULTS.md). The quick runs
are heavy (~5 min together), so they are ``slow``: run them with ``pytest -m slow
tests/benchmarks``; the default test command checks only that every script is listed here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ..e2e.helpers import REPO, cli_env

SCRIPTS = {
    "harness_overhead.py": True,  # takes --data-dir
    "allreduce_vs_ddp.py": True,
    "comm_efficiency.py": False,
    "throughput_1a.py": True,
    "throughput_3a.py": True,  # the full-size AWD-LSTM, 1 step each side: ~20 s
    "throughput_translation.py": True,  # 4a and 4b, tiny models, 1 step each side: ~20 s
    "data_pipeline.py": True,
    "ingest.py": False,
    "master_abuse.py": False,
    "soak.py": False,  # 8 workers at 10 Hz for 5 s against a real master: ~10 s
    "slurm_startup.py": True,  # starts its own real Slurm (root, slurm-wlm, munge): ~30 s
    "fault_costs.py": True,  # three 2a runs, two of them restarted once: ~40 s
    "failure_cost.py": True,  # a 2-point 2a sweep, one point killed and restarted: ~20 s
    "image_decode.py": True,  # 80 JPEGs through 4 decoders and the loader: ~5 s
}


def test_every_script_is_covered() -> None:
    found = {p.name for p in (REPO / "benchmarks").glob("*.py")}
    # the table scripts read results a run or sweep left; they measure nothing themselves;
    # gpu_images.py needs a CUDA device (tests/benchmarks/test_gpu_images.py runs its CPU mode)
    others = {"common.py", "algorithms_table.py", "network_table.py", "gpu_images.py"}
    assert found - others == set(SCRIPTS)


@pytest.mark.slow  # ~5 min in all: `pytest -m slow tests/benchmarks` (docs/benchmarks.md)
@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_quick_mode_runs(script: str, real_data: Path, tmp_path: Path) -> None:
    cmd = [sys.executable, str(REPO / "benchmarks" / script), "--quick", "--no-record"]
    if SCRIPTS[script]:
        cmd += ["--data-dir", str(real_data)]
    before = (REPO / "benchmarks" / "RESULTS.md").read_text()
    proc = subprocess.run(
        cmd, env=cli_env(tmp_path), capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # a table (Markdown, or rich's box drawing for ingest) with its measure was printed, and
    # nothing was recorded
    assert "|" in proc.stdout or "│" in proc.stdout
    assert "target" in proc.stdout or "events/s" in proc.stdout
    assert (REPO / "benchmarks" / "RESULTS.md").read_text() == before
