"""``mlbench cluster``: golden dry-run plans (``MLBENCH_UPDATE_GOLDEN=1`` rewrites them), a
teardown for every create, the eksctl config against eksctl's published schema, kind.yaml
against a small schema, and the gcloud lines through gcloud's own offline argument parser."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlbench.clusters import ClusterRequest, eks_config, kind_config, parse_gpus, plan
from mlbench.errors import ConfigError

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
GOLDEN = HERE / "data" / "clusters"
TOOLS = Path(os.environ.get("MLBENCH_TOOLS_DIR", REPO / ".tools"))
CASES: dict[str, list[str]] = {
    "gke-cpu": ["gke"],
    "gke-l4": ["gke", "--gpus", "nvidia-l4:1", "--zone", "europe-west4-a", "--nodes", "4"],
    "eks-cpu": ["eks"],
    "eks-a10g": ["eks", "--gpus", "nvidia-a10g:4", "--zone", "eu-west-1", "--name", "bench"],
    "kind": ["kind", "--nodes", "3"],
}


def dry_run(action: str, args: list[str]) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "mlbench.cli.main", "cluster", action, *args, "--dry-run"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("case", sorted(CASES))
def test_plans_match_golden(case: str) -> None:
    text = "".join(
        f"## mlbench cluster {action} {' '.join(CASES[case])}\n{dry_run(action, CASES[case])}\n"
        for action in ("create", "credentials", "delete")
    )
    path = GOLDEN / f"{case}.txt"
    if os.environ.get("MLBENCH_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{path.name} changed (MLBENCH_UPDATE_GOLDEN=1 rewrites it)"


@pytest.mark.parametrize("provider", ["gke", "eks", "kind"])
def test_every_create_has_its_teardown(provider: str) -> None:
    req = ClusterRequest(provider)
    create, delete = plan("create", req), plan("delete", req)
    assert create.teardown == delete.commands
    assert create.commands[-1][:3] == ["helm", "upgrade", "--install"]


def test_bad_requests_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"known: .*nvidia-l4"):
        plan("create", ClusterRequest("gke", gpus=("nvidia-l5", 1)))
    with pytest.raises(ConfigError, match="1, 4, 8 per node, not 3"):
        plan("create", ClusterRequest("eks", gpus=("nvidia-a10g", 3)))
    with pytest.raises(ConfigError, match="no GPUs"):
        ClusterRequest("kind", gpus=("nvidia-l4", 1))
    with pytest.raises(ConfigError, match="TYPE:COUNT"):
        parse_gpus("nvidia-l4:x")
    assert parse_gpus("nvidia-l4") == ("nvidia-l4", 1)


# ---------------------------------------------------------------------------- schemas
_VALIDATE = """
import json, sys, jsonschema
schema, docs = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
cls = jsonschema.validators.validator_for(schema)
for doc in docs:
    print(json.dumps(sorted(e.message for e in cls(schema).iter_errors(doc))))
"""


def schema_errors(schema: dict[str, Any], docs: list[Any], tmp_path: Path) -> list[list[str]]:
    """jsonschema runs in the chart tools' venv (kubernetes-validate brings it): the project
    itself does not depend on it."""
    python = TOOLS / "venv" / "bin" / "python"
    if not python.exists():
        if os.environ.get("MLBENCH_NO_CHART_TOOLS") == "1":
            pytest.skip("MLBENCH_NO_CHART_TOOLS=1: the tools venv with jsonschema is not installed")
        pytest.fail(f"{python} missing: run ./.ci/chart-tools (or set MLBENCH_NO_CHART_TOOLS=1)")
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    (tmp_path / "docs.json").write_text(json.dumps(docs))
    proc = subprocess.run(
        [str(python), "-c", _VALIDATE, str(tmp_path / "schema.json"), str(tmp_path / "docs.json")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_eksctl_configs_match_eksctls_schema(tmp_path: Path) -> None:
    schema = json.loads((HERE / "data" / "eksctl-v1alpha5.schema.json").read_text())
    good = [
        eks_config(ClusterRequest("eks")),
        eks_config(ClusterRequest("eks", gpus=("nvidia-l4", 4), nodes=3)),
    ]
    bad = json.loads(json.dumps(good[1]))
    bad["managedNodeGroups"][1]["instancetype"] = bad["managedNodeGroups"][1].pop("instanceType")
    errors = schema_errors(schema, [*good, bad], tmp_path)
    assert errors[:2] == [[], []]
    assert any("instancetype" in e for e in errors[2])


KIND_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["kind", "apiVersion", "nodes"],
    "properties": {
        "kind": {"const": "Cluster"},
        "apiVersion": {"const": "kind.x-k8s.io/v1alpha4"},
        "name": {"type": "string"},
        "networking": {"type": "object"},
        "nodes": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["role"],
                "properties": {
                    "role": {"enum": ["control-plane", "worker"]},
                    "image": {"type": "string"},
                    "labels": {"type": "object"},
                    "extraMounts": {"type": "array"},
                    "extraPortMappings": {"type": "array"},
                },
            },
        },
    },
}


def test_kind_config_matches_its_schema(tmp_path: Path) -> None:
    good = kind_config(ClusterRequest("kind", nodes=2))
    bad = {**good, "nodes": [{"role": "master"}]}
    assert [n["role"] for n in good["nodes"]] == ["control-plane", "worker", "worker"]  # type: ignore[index]
    assert (
        yaml.safe_load(plan("create", ClusterRequest("kind", nodes=2)).files["mlbench-kind.yaml"])
        == good
    )
    errors = schema_errors(KIND_SCHEMA, [good, bad], tmp_path)
    assert errors[0] == [] and any("master" in e for e in errors[1])


# ---------------------------------------------------------------------------- gcloud
def gcloud_parse(argv: list[str], config_dir: Path) -> str:
    """Run a gcloud line with an empty configuration and no network: gcloud parses its
    arguments, then stops because no account is logged in (measured: ~1 s)."""
    env = {**os.environ, "CLOUDSDK_CONFIG": str(config_dir), "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"}
    net = ["unshare", "-n"] if shutil.which("unshare") and os.geteuid() == 0 else []
    proc = subprocess.run([*net, *argv], capture_output=True, text=True, env=env, timeout=60)
    return proc.stdout + proc.stderr


def test_gcloud_parses_every_generated_line(tmp_path: Path) -> None:
    if shutil.which("gcloud") is None:
        pytest.skip(
            "gcloud is not installed here: the gcloud lines are checked by golden files only"
        )
    reqs = [ClusterRequest("gke"), ClusterRequest("gke", gpus=("nvidia-l4", 2), nodes=3)]
    lines = [
        c for r in reqs for a in ("create", "credentials", "delete") for c in plan(a, r).commands
    ]
    lines = [c for c in lines if c[0] == "gcloud"]
    assert len(lines) >= 6
    for argv in lines:
        out = gcloud_parse(argv, tmp_path / "gcloud")
        assert "active account" in out and "unrecognized" not in out, (argv, out)
    typo = [a.replace("--accelerator", "--acelerator") for a in plan("create", reqs[1]).commands[1]]
    out = gcloud_parse(typo, tmp_path / "gcloud")
    assert "unrecognized arguments" in out and "--acelerator" in out
