"""docs/adding-an-algorithm.md: its example scheme runs as a plug-in (module:Class and entry point).

The code is taken from the document itself, so the walkthrough cannot drift from what works.
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
DOC = REPO / "docs" / "adding-an-algorithm.md"


def _example_code() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    [code] = [b for b in blocks if "class FP16AllReduce" in b]
    return code


@pytest.fixture
def plugin_path(tmp_path: Path) -> Path:
    pkg = tmp_path / "site"
    pkg.mkdir()
    (pkg / "my_schemes.py").write_text(_example_code())
    # an installed distribution declaring the entry point, as pip would leave it
    dist_info = pkg / "my_schemes-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-schemes\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(
        "[mlbench.algorithms]\nfp16-allreduce = my_schemes:FP16AllReduce\n"
    )
    return pkg


def _run(plugin_path: Path, real_data: Path, tmp_path: Path, algorithm: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(plugin_path), MLBENCH_HOME=str(tmp_path / "home"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlbench.cli.main",
            "run",
            "epsilon-logreg",
            "--workers",
            "2",
            "--data-dir",
            str(real_data),
            "--set",
            "data.dataset=a9a",
            "--set",
            "train.max_steps=20",
            "--set",
            "algorithm.wire_dtype=float16",
            "--algorithm",
            algorithm,
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_doc_example_runs_as_module_class(plugin_path: Path, real_data: Path, tmp_path: Path):
    result = _run(plugin_path, real_data, tmp_path, "my_schemes:FP16AllReduce")
    assert result["state"] == "finished" and result["official"] is False
    assert "algorithm.name" in result["official_differences"]
    # 123 a9a weights in fp16, 20 steps, 2 ranks: half the dense fp32 bytes
    assert result["summary"]["bytes_sent"] == 20 * 123 * 2 * 2
    assert result["summary"]["compression_ratio"] == pytest.approx(2.0)
    assert result["ranks"][0]["algorithm_stats"]["wire_dtype"] == "float16"


def test_doc_example_runs_by_entry_point_name(plugin_path: Path, real_data: Path, tmp_path: Path):
    result = _run(plugin_path, real_data, tmp_path, "fp16-allreduce")
    assert result["algorithm"] == "fp16-allreduce" and result["state"] == "finished"


def test_doc_example_check_config_rejects_before_start(plugin_path: Path, tmp_path: Path):
    env = dict(os.environ, PYTHONPATH=str(plugin_path), MLBENCH_HOME=str(tmp_path / "home"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlbench.cli.main",
            "run",
            "epsilon-logreg",
            "--algorithm",
            "fp16-allreduce",
            "--set",
            "algorithm.wire_dtype=float64",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "set algorithm.wire_dtype=float16 or bfloat16" in proc.stderr
    # a key of another scheme is refused, naming whose option it is
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "mlbench.cli.main", "run", "epsilon-logreg"),
            *("--algorithm", "fp16-allreduce", "--set", "algorithm.mode=weights"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2 and "it is an option of allreduce" in proc.stderr
