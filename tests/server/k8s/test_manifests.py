"""The per-run objects: golden files (``MLBENCH_UPDATE_GOLDEN=1`` rewrites them), the shape
CLUSTERS.md §1.2 asks for, ``kubernetes-validate --strict`` against the oldest and newest
Kubernetes versions supported, and the JobSet export against the JobSet CRD's schema."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlbench.errors import ConfigError
from mlbench.server.k8s import manifests

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
GOLDEN = HERE / "golden"
TOOLS = Path(os.environ.get("MLBENCH_TOOLS_DIR", REPO / ".tools"))
#: podFailurePolicy is GA from 1.31; the newest schema kubernetes-validate ships
K8S_VERSIONS = ("1.31.0", "1.37.0")
UID = "6a9f6c1e-0000-4000-8000-000000000001"
CONFIG = {"task": "epsilon-logreg", "data": {"dataset": "a9a"}, "train": {"max_steps": 20}}


def cpu_spec() -> manifests.RunSpec:
    placement = manifests.Placement(image="mlbench/mlbench:0.1.0", namespace="mlbench-runs")
    return manifests.RunSpec(
        "20261201-120000-epsilon-logreg-abc123",
        "epsilon-logreg",
        CONFIG,
        nodes=2,
        nproc_per_node=1,
        backend="gloo",
        master_url="http://mlbench.mlbench.svc:8000",
        placement=placement,
    )


def gpu_spec() -> manifests.RunSpec:
    """The chart's settings file, as the master reads it, for a GKE L4 pool behind Kueue."""
    placement = manifests.Placement.from_config(
        {
            "namespace": "mlbench-runs",
            "image": "ghcr.io/mlbench/mlbench@sha256:" + "0" * 64,
            "imagePullPolicy": "IfNotPresent",
            "imagePullSecrets": [{"name": "regcred"}],
            "serviceAccountName": "mlbench-worker",
            "masterUrl": "http://mlbench.mlbench.svc:8000",
            "uid": 10001,
            "resources": {"requests": {"cpu": "6", "memory": "24Gi"}, "limits": {"memory": "28Gi"}},
            "gpus": 2,
            "nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
            "shmSize": "8Gi",
            "ttlSecondsAfterFinished": 7200,
            "kueueQueue": "gpu-queue",
            "labels": {"app.kubernetes.io/instance": "mlbench"},
        }
    )
    return manifests.RunSpec(
        "20261201-120000-cifar10-resnet20-def456",
        "cifar10-resnet20",
        {"task": "cifar10-resnet20"},
        nodes=2,
        nproc_per_node=2,
        backend="nccl",
        master_url=placement.master_url,
        placement=placement,
    )


def rendered(spec: manifests.RunSpec) -> list[dict[str, Any]]:
    """The objects exactly as the executor sends them (Service and Secret owned by the Job)."""
    job, svc, sec = manifests.run_objects(spec, "upload-token-placeholder")
    created = json.loads(json.dumps(job))
    created["metadata"]["uid"] = UID
    return [job, manifests.owned_by(svc, created), manifests.owned_by(sec, created)]


CASES = {"cpu": cpu_spec, "gpu-kueue": gpu_spec}


def check_golden(path: Path, text: str) -> None:
    if os.environ.get("MLBENCH_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with MLBENCH_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{path.name} changed (MLBENCH_UPDATE_GOLDEN=1 rewrites it)"


@pytest.mark.parametrize("case", sorted(CASES))
def test_objects_match_golden(case: str) -> None:
    text = yaml.safe_dump_all(rendered(CASES[case]()), sort_keys=False)
    check_golden(GOLDEN / f"run-{case}.yaml", text)


def test_the_shape_clusters_md_recommends() -> None:
    job, svc, sec = rendered(gpu_spec())
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == 2 and spec["backoffLimit"] == 0
    (rule,) = spec["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob" and rule["onExitCodes"]["operator"] == "NotIn"
    assert rule["onExitCodes"]["values"] == [0]
    assert spec["suspend"] is True and job["metadata"]["labels"][manifests.KUEUE_LABEL]
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["subdomain"] == svc["metadata"]["name"]
    assert pod["automountServiceAccountToken"] is False
    term = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term[0]["topologyKey"] == "kubernetes.io/hostname"
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert all("secretKeyRef" not in json.dumps(e) for e in container["env"])  # token: a file
    script = container["command"][2]
    assert "--node-rank '$(JOB_COMPLETION_INDEX)'" in script
    assert f"--master-addr {job['metadata']['name']}-0.{svc['metadata']['name']}" in script
    assert "--nproc-per-node 2" in script and "--upload-token-file /var/run/mlbench/token" in script
    ctx = container["securityContext"]
    assert ctx["readOnlyRootFilesystem"] and not ctx["allowPrivilegeEscalation"]
    assert ctx["capabilities"] == {"drop": ["ALL"]} and ctx["runAsNonRoot"]
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["dshm"]["emptyDir"]["medium"] == "Memory" and "emptyDir" in vols["tmp"]
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"]
    assert svc["spec"]["ports"][0]["port"] == 29500
    for obj in (job, svc, sec):
        assert obj["metadata"]["labels"][manifests.RUN_ID_LABEL] == gpu_spec().run_id
        assert obj["metadata"]["namespace"] == "mlbench-runs"


def test_names_stay_dns_labels_and_unique() -> None:
    long_a = "20261201-120000-wmt17-transformer-with-a-very-long-suffix-aaaaaa"
    long_b = long_a[:-1] + "b"
    a, b = manifests.job_name(long_a), manifests.job_name(long_b)
    assert a != b and len(a) <= 52 and len(b) <= 52
    assert manifests.job_name("Run_1") == "mlb-run-1"
    assert manifests.run_label("a" * 64) != "a" * 64 and len(manifests.run_label("a" * 64)) <= 63


def test_settings_file_refuses_unknown_keys() -> None:
    with pytest.raises(ConfigError, match="imagePullPolicyy"):
        manifests.Placement.from_config({"image": "x", "imagePullPolicyy": "Always"})
    with pytest.raises(ConfigError, match="image"):
        manifests.Placement(image="")


def kubernetes_validate() -> Path:
    exe = TOOLS / "venv" / "bin" / "kubernetes-validate"
    if not exe.exists():
        if os.environ.get("MLBENCH_NO_CHART_TOOLS") == "1":
            pytest.skip("MLBENCH_NO_CHART_TOOLS=1: kubernetes-validate not installed")
        pytest.fail(f"{exe} missing: run ./.ci/chart-tools (or set MLBENCH_NO_CHART_TOOLS=1)")
    return exe


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_objects_validate_strictly(version: str, tmp_path: Path) -> None:
    exe = kubernetes_validate()
    files = []
    for case, make in sorted(CASES.items()):
        path = tmp_path / f"{case}.yaml"
        path.write_text(yaml.safe_dump_all(rendered(make())))
        files.append(str(path))
    proc = subprocess.run(
        [str(exe), "--strict", "-k", version, "--no-warn", *files],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_validation_catches_a_misspelt_field(tmp_path: Path) -> None:
    exe = kubernetes_validate()
    job = rendered(cpu_spec())[0]
    job["spec"]["completionsMode"] = job["spec"].pop("completionMode")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(job))
    proc = subprocess.run(
        [str(exe), "--strict", "-k", K8S_VERSIONS[0], str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "completionsMode" in proc.stdout + proc.stderr


# ---------------------------------------------------------------------------- JobSet export
JOBSET_SCHEMA = HERE / "data" / "jobset-v1alpha2.schema.json"
_CHECK = """
import json, sys, jsonschema
schema, docs = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
def close(node):
    # unknown fields are errors: the API server would prune them silently
    if isinstance(node, dict):
        if "properties" in node and "additionalProperties" not in node \\
                and not node.get("x-kubernetes-preserve-unknown-fields"):
            node["additionalProperties"] = False
        for value in node.values():
            close(value)
    elif isinstance(node, list):
        for value in node:
            close(value)
close(schema)
v = jsonschema.Draft202012Validator(schema)
for doc in docs:
    errs = sorted(v.iter_errors(doc), key=lambda e: list(e.path))
    print(json.dumps([f"{'/'.join(map(str, e.path))}: {e.message}" for e in errs]))
"""


def jobset_errors(docs: list[dict[str, Any]], tmp_path: Path) -> list[list[str]]:
    """jsonschema runs in the chart tools' venv (kubernetes-validate brings it): the project
    itself does not depend on it."""
    python = TOOLS / "venv" / "bin" / "python"
    kubernetes_validate()  # same venv: same skip/fail rule
    doc_file = tmp_path / "jobsets.json"
    doc_file.write_text(json.dumps(docs))
    proc = subprocess.run(
        [str(python), "-c", _CHECK, str(JOBSET_SCHEMA), str(doc_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_jobset_export_matches_golden_and_the_crd_schema(tmp_path: Path) -> None:
    sets = [manifests.jobset(make()) for _, make in sorted(CASES.items())]
    for (case, _), obj in zip(sorted(CASES.items()), sets, strict=True):
        check_golden(GOLDEN / f"jobset-{case}.yaml", yaml.safe_dump(obj, sort_keys=False))
    bad = json.loads(json.dumps(sets[0]))
    bad["spec"]["replicatedJobs"][0]["replica"] = 1  # misspelt
    bad["spec"]["failurePolicy"]["maxRestarts"] = "zero"
    ok_a, ok_b, errors = jobset_errors([*sets, bad], tmp_path)
    assert ok_a == [] and ok_b == []
    assert any("replica" in e for e in errors) and any("zero" in e for e in errors)


def test_jobset_keeps_the_run_shape() -> None:
    js = manifests.jobset(gpu_spec())
    (rjob,) = js["spec"]["replicatedJobs"]
    job_spec = rjob["template"]["spec"]
    assert js["spec"]["failurePolicy"] == {"maxRestarts": 0}
    assert job_spec["completionMode"] == "Indexed" and job_spec["completions"] == 2
    script = job_spec["template"]["spec"]["containers"][0]["command"][2]
    name = js["metadata"]["name"]
    assert f"--master-addr {name}-node-0-0.{name}" in script
    assert js["metadata"]["labels"][manifests.KUEUE_LABEL] == "gpu-queue"


def test_export_jobset_cli_prints_the_secret_and_a_valid_jobset(tmp_path: Path) -> None:
    import sys

    settings = tmp_path / "kubernetes.json"
    settings.write_text(json.dumps({"image": "mlbench/mlbench:0.1.0", "namespace": "runs"}))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlbench.cli.main",
            "export",
            "jobset",
            "epsilon-logreg",
            "--set",
            "data.dataset=a9a",
            "--nodes",
            "3",
            "--k8s-config",
            str(settings),
            "--run-id",
            "r-export",
            "--data-dir",
            "/data",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    sec, js = yaml.safe_load_all(proc.stdout)
    assert sec["kind"] == "Secret" and js["kind"] == "JobSet"
    config = json.loads(sec["stringData"]["config.json"])
    assert config["data"]["dataset"] == "a9a" and config["data"]["dir"] == "/data"
    pod = js["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    assert pod["volumes"][0]["secret"]["secretName"] == sec["metadata"]["name"]
    assert js["metadata"]["namespace"] == sec["metadata"]["namespace"] == "runs"
    assert jobset_errors([js], tmp_path) == [[]]
