"""Where the chart tests find helm, kubernetes-validate and checkov, and how they render the chart.

The tools live outside the project venv, in ``.tools/`` (installed by ``.ci/chart-tools``, which
``make test`` runs). A missing tool fails the test with the command that installs it; only
``MLBENCH_NO_CHART_TOOLS=1`` turns that into a skip, for machines that cannot reach npm or PyPI.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "mlbench"
HERE = Path(__file__).resolve().parent
TOOLS = Path(os.environ.get("MLBENCH_TOOLS_DIR", REPO / ".tools"))
RELEASE = "mlbench"
NAMESPACE = "mlbench"
# the renders the tests cover: the chart's defaults, and every option set
RENDERS: dict[str, list[str]] = {"default": [], "full": ["-f", str(HERE / "values-full.yaml")]}


def tool(name: str) -> Path:
    """Path to an installed tool, or fail (skip only when opted out) with how to install it."""
    path = TOOLS / "bin" / name if name == "helm" else TOOLS / "venv" / "bin" / name
    if path.exists():
        return path
    if os.environ.get("MLBENCH_NO_CHART_TOOLS") == "1":
        pytest.skip(f"MLBENCH_NO_CHART_TOOLS=1 and {name} is not installed")
    pytest.fail(
        f"{name} not found at {path}: run ./.ci/chart-tools (make test does), "
        "or set MLBENCH_NO_CHART_TOOLS=1 to skip the chart tests"
    )


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the pinned helm with no network-visible state: its config and cache dirs are empty
    temporary ones under .tools, so a user's repositories or plugins never change the result."""
    env = dict(os.environ)
    for var in ("HELM_CONFIG_HOME", "HELM_CACHE_HOME", "HELM_DATA_HOME"):
        env[var] = str(TOOLS / "helm-home" / var.lower())
    return subprocess.run(
        [str(tool("helm")), *args], capture_output=True, text=True, env=env, timeout=60
    )


def template(*values_args: str) -> subprocess.CompletedProcess[str]:
    return helm("template", RELEASE, str(CHART), "-n", NAMESPACE, *values_args)


def render(name: str) -> str:
    result = template(*RENDERS[name])
    assert result.returncode == 0, result.stderr
    return result.stdout


def objects(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def pod_specs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod specs an object creates (a Pod's own, a workload's template)."""
    if obj["kind"] == "Pod":
        return [obj["spec"]]
    template = obj.get("spec", {}).get("template")
    if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"):
        return [template["spec"]]
    if obj["kind"] == "CronJob":
        return [obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]]
    return []
