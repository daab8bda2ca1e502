"""charts/mlbench verified offline with the real tools: helm lint and template (pinned helm 4.1.4),
golden renders, kubernetes-validate --strict against the oldest and newest supported Kubernetes,
checkov with a checked-in skip list, the values schema's refusals, and the invariants the chart
promises (namespace on every object, restricted security contexts, the executor Role).

Regenerate the golden renders after an intended chart change with MLBENCH_UPDATE_GOLDEN=1.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.tools import (
    CHART,
    HERE,
    NAMESPACE,
    RENDERS,
    helm,
    objects,
    pod_specs,
    render,
    template,
    tool,
)

# podFailurePolicy, which the run Jobs need, is GA from 1.31 (Chart.yaml kubeVersion); 1.37 is the
# newest kubernetes-validate 1.37.0 knows
KUBERNETES_VERSIONS = ["1.31.0", "1.37.0"]
UID = 10001  # docker/Dockerfile's user
RUNS_NAMESPACE_FULL = "mlbench-runs"


@pytest.fixture(scope="module")
def renders() -> dict[str, str]:
    return {name: render(name) for name in RENDERS}


@pytest.fixture(scope="module")
def rendered_dir(renders: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rendered")
    for name, text in renders.items():
        (out / f"{name}.yaml").write_text(text)
    return out


@pytest.mark.parametrize("name", list(RENDERS))
def test_helm_lint_strict(name: str) -> None:
    result = helm("lint", "--strict", str(CHART), "-n", NAMESPACE, *RENDERS[name])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("name", list(RENDERS))
def test_golden_render(renders: dict[str, str], name: str) -> None:
    path = HERE / "golden" / f"{name}.yaml"
    if os.environ.get("MLBENCH_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(renders[name])
    assert path.exists(), f"no golden render {path.name}: run with MLBENCH_UPDATE_GOLDEN=1"
    assert renders[name] == path.read_text(), (
        f"the {name} render departs from {path.relative_to(HERE.parents[1])}; if the change is "
        "intended, regenerate with MLBENCH_UPDATE_GOLDEN=1 and review the diff"
    )


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_validate_strict(rendered_dir: Path, version: str) -> None:
    files = sorted(str(p) for p in rendered_dir.glob("*.yaml"))
    result = subprocess.run(
        [str(tool("kubernetes-validate")), "--strict", "--no-warn", "-k", version, *files],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    n = sum(len(objects(Path(f).read_text())) for f in files)
    assert result.stdout.count("passed for resource") == n, result.stdout


def _checkov_findings(report: Any) -> set[tuple[str, str, str]]:
    """(check, Kind/name or Dockerfile resource, render) for every failed check."""
    found = set()
    for block in report if isinstance(report, list) else [report]:
        for f in block["results"]["failed_checks"]:
            render_name = Path(f["file_path"]).stem.lower()
            resource = f["resource"].lstrip("/")
            if block["check_type"] == "kubernetes":
                kind, _namespace, name = resource.split(".")[:3]
                resource = f"{kind}/{name}"
            found.add((f["check_id"], resource, render_name))
    return found


def _accepted() -> set[tuple[str, str, str]]:
    entries = yaml.safe_load((HERE / "checkov-skips.yaml").read_text())
    for e in entries:
        assert e.get("why", "").strip(), f"{e['check']}: every accepted finding needs a reason"
    return {
        (e["check"], resource, render_name)
        for e in entries
        for resource in e["resources"]
        for render_name in e["renders"]
    }


def test_checkov(rendered_dir: Path) -> None:
    (rendered_dir / "Dockerfile").write_text(
        (HERE.parents[1] / "docker" / "Dockerfile").read_text()
    )
    result = subprocess.run(
        [
            *(str(tool("checkov")), "--skip-download", "--quiet", "-d", str(rendered_dir)),
            *("--framework", "kubernetes", "dockerfile", "-o", "json"),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=rendered_dir,
    )
    assert result.returncode in (0, 1), result.stderr  # 1: some check failed
    report = json.loads(result.stdout)
    for block in report if isinstance(report, list) else [report]:
        assert block["summary"]["parsing_errors"] == 0, block["summary"]
        assert block["summary"]["passed"] > 50, block["summary"]
    found, accepted = _checkov_findings(report), _accepted()
    new = sorted(found - accepted)
    stale = sorted(accepted - found)
    assert not new, "checkov findings not in tests/chart/checkov-skips.yaml: fix them or add " + (
        f"them with a reason: {new}"
    )
    assert not stale, f"checkov-skips.yaml lists findings that no longer fire; remove: {stale}"


# --- the values schema refuses what it should, naming where -----------------------------------

REFUSED = [
    (["--set", "replicas=2"], "at '': additional properties 'replicas' not allowed"),
    (["--set", "runs.gpu=1"], "at '/runs': additional properties 'gpu' not allowed"),
    (["--set", "master.resources.requests.gpu=1"], "at '/master/resources/requests'"),
    (["--set", "runs.gpus=-1"], "at '/runs/gpus': minimum"),
    (["--set", "master.capacityWorkers=0"], "at '/master/capacityWorkers': minimum"),
    (["--set", "image.digest=latest"], "at '/image/digest'"),
    (["--set", "service.type=Ingress"], "at '/service/type'"),
    (["--set", "runs.namespace=Bad_Name"], "at '/runs/namespace'"),
    (["--set", "runs.resources.requests.memory=lots"], "at '/runs/resources/requests/memory'"),
    # a URL where the Secret's *name* belongs: the credentials must never sit in values
    (
        ["--set", "database.postgresSecret=postgresql://u:pw@db:5432/mlbench"],
        "at '/database/postgresSecret'",
    ),
]


@pytest.mark.parametrize(("args", "pointer"), REFUSED, ids=[a[1] for a, _ in REFUSED])
def test_schema_refuses(args: list[str], pointer: str) -> None:
    result = template(*args)
    assert result.returncode != 0, f"helm template accepted {args}"
    assert pointer in result.stderr, result.stderr


def test_schema_refusal_fails_lint_too() -> None:
    result = helm("lint", "--strict", str(CHART), "--set", "runs.gpu=1")
    assert result.returncode != 0
    assert "at '/runs': additional properties 'gpu' not allowed" in result.stdout + result.stderr


# --- invariants of the rendered objects --------------------------------------------------------


@pytest.mark.parametrize("name", list(RENDERS))
def test_every_object_has_a_namespace(renders: dict[str, str], name: str) -> None:
    runs_ns = RUNS_NAMESPACE_FULL if name == "full" else NAMESPACE
    for obj in objects(renders[name]):
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        ns = obj["metadata"].get("namespace")
        # the executor's Role, its binding and the workers' account live where the runs do
        in_runs_ns = obj["kind"] in ("Role", "RoleBinding") or where.endswith("-worker")
        assert ns == (runs_ns if in_runs_ns else NAMESPACE), f"{where}: namespace {ns!r}"


def _assert_restricted(spec: dict[str, Any], where: str) -> None:
    psc = spec.get("securityContext", {})
    assert psc.get("runAsNonRoot") is True, f"{where}: pod runAsNonRoot"
    assert psc.get("runAsUser") == UID, f"{where}: pod runAsUser {psc.get('runAsUser')}"
    assert psc.get("seccompProfile") == {"type": "RuntimeDefault"}, f"{where}: pod seccomp"
    containers = spec.get("initContainers", []) + spec["containers"]
    for c in containers:
        at = f"{where} container {c['name']}"
        sc = c.get("securityContext", {})
        assert sc.get("runAsNonRoot") is True, f"{at}: runAsNonRoot"
        assert sc.get("runAsUser") == UID, f"{at}: runAsUser"
        assert sc.get("readOnlyRootFilesystem") is True, f"{at}: readOnlyRootFilesystem"
        assert sc.get("allowPrivilegeEscalation") is False, f"{at}: allowPrivilegeEscalation"
        assert sc.get("privileged") in (None, False), f"{at}: privileged"
        assert sc.get("capabilities") == {"drop": ["ALL"]}, f"{at}: capabilities"
        assert sc.get("seccompProfile") == {"type": "RuntimeDefault"}, f"{at}: seccomp"
        requests = c.get("resources", {}).get("requests", {})
        assert {"cpu", "memory"} <= set(requests), f"{at}: cpu and memory requests"
        assert "memory" in c.get("resources", {}).get("limits", {}), f"{at}: memory limit"


@pytest.mark.parametrize("name", list(RENDERS))
def test_every_pod_is_restricted(renders: dict[str, str], name: str) -> None:
    specs = [
        (f"{o['kind']}/{o['metadata']['name']}", s)
        for o in objects(renders[name])
        for s in pod_specs(o)
    ]
    assert len(specs) == 2, [w for w, _ in specs]  # the master and the helm test pod
    for where, spec in specs:
        _assert_restricted(spec, where)


def test_restricted_check_can_fail(renders: dict[str, str]) -> None:
    """The invariant check itself catches a weakened container (a test that cannot fail is
    worthless)."""
    master = next(o for o in objects(renders["default"]) if o["kind"] == "Deployment")
    spec = pod_specs(master)[0]
    spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
    with pytest.raises(AssertionError, match="readOnlyRootFilesystem"):
        _assert_restricted(spec, "mutated")


# CLUSTERS.md §1.3: exactly these, namespaced; never pods/exec
ROLE_RULES = {
    ("batch", "jobs"): {"create", "get", "list", "watch", "delete", "patch"},
    ("", "services"): {"create", "get", "delete"},
    ("", "pods"): {"get", "list", "watch"},
    ("", "pods/log"): {"get"},
    ("", "events"): {"get", "list", "watch"},
    ("events.k8s.io", "events"): {"get", "list", "watch"},
    ("", "secrets"): {"create", "delete"},
}


def role_permissions(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    allowed: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                allowed.setdefault((group, resource), set()).update(rule["verbs"])
    return allowed


@pytest.mark.parametrize("name", list(RENDERS))
def test_executor_role_is_exactly_the_table(renders: dict[str, str], name: str) -> None:
    objs = objects(renders[name])
    kinds = {o["kind"] for o in objs}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}, "nothing cluster-wide"
    (role,) = [o for o in objs if o["kind"] == "Role"]
    assert role_permissions(role) == ROLE_RULES
    (binding,) = [o for o in objs if o["kind"] == "RoleBinding"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "mlbench-master", "namespace": NAMESPACE}
    ]


def test_role_rules_are_static_yaml() -> None:
    """Other tests (the executor's RBAC coverage) read the rules straight from the template: no
    template directives may appear inside them."""
    text = (CHART / "templates" / "rbac.yaml").read_text()
    rules = text.split("rules:", 1)[1].split("\n---", 1)[0]
    assert "{{" not in rules
    role = yaml.safe_load("rules:" + rules)
    assert role_permissions(role) == ROLE_RULES


@pytest.mark.parametrize("name", list(RENDERS))
def test_service_accounts(renders: dict[str, str], name: str) -> None:
    accounts = {
        o["metadata"]["name"]: o for o in objects(renders[name]) if o["kind"] == "ServiceAccount"
    }
    assert accounts["mlbench-worker"]["automountServiceAccountToken"] is False
    assert accounts["mlbench-master"]["automountServiceAccountToken"] is True
    test_pod = next(o for o in objects(renders[name]) if o["kind"] == "Pod")
    assert test_pod["spec"]["automountServiceAccountToken"] is False


def _master(text: str) -> dict[str, Any]:
    return next(o for o in objects(text) if o["kind"] == "Deployment")


def test_database_secret_by_reference_only(renders: dict[str, str]) -> None:
    env = {
        e["name"]: e
        for e in _master(renders["full"])["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["MLBENCH_DATABASE_URL"] == {
        "name": "MLBENCH_DATABASE_URL",
        "valueFrom": {"secretKeyRef": {"name": "mlbench-db", "key": "url"}},
    }
    assert not any(o["kind"] == "Secret" for o in objects(renders["full"]))
    assert "postgresql://" not in renders["full"]
    default_env = _master(renders["default"])["spec"]["template"]["spec"]["containers"][0]["env"]
    assert "MLBENCH_DATABASE_URL" not in {e["name"] for e in default_env}
    # SQLite needs the volume; one replica, and Recreate so the new pod can mount it
    spec = _master(renders["default"])["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    assert any(o["kind"] == "PersistentVolumeClaim" for o in objects(renders["default"]))


def test_image_pinned_by_digest(renders: dict[str, str]) -> None:
    image = _master(renders["full"])["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == (
        "registry.example.com/team/mlbench@sha256:"
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    )
    assert _master(renders["default"])["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "mlbench/mlbench:0.1.0"
    )


def _executor_config(text: str) -> dict[str, Any]:
    cm = next(o for o in objects(text) if o["kind"] == "ConfigMap")
    return json.loads(cm["data"]["kubernetes.json"])


def test_executor_config(renders: dict[str, str]) -> None:
    """What the master's Kubernetes executor reads from $MLBENCH_KUBERNETES_CONFIG."""
    full = _executor_config(renders["full"])
    assert full["namespace"] == RUNS_NAMESPACE_FULL
    assert full["gpus"] == 1
    assert full["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert full["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert full["image"].startswith("registry.example.com/team/mlbench-worker@sha256:")
    assert full["serviceAccountName"] == "mlbench-worker"
    assert full["masterUrl"] == f"http://mlbench.{NAMESPACE}.svc:8080"
    assert full["uid"] == UID
    assert full["kueueQueue"] == "gpu-queue"
    default = _executor_config(renders["default"])
    assert default["namespace"] == NAMESPACE and default["gpus"] == 0
    assert default["image"] == "mlbench/mlbench:0.1.0"  # the master's own image
    master = _master(renders["default"])["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in master["env"]}
    assert env["MLBENCH_EXECUTOR"] == "kubernetes"
    assert env["MLBENCH_KUBERNETES_CONFIG"] == "/etc/mlbench/kubernetes.json"


def test_health_path_is_the_servers(renders: dict[str, str]) -> None:
    """The probes and the `helm test` pod ask the route the server really serves, open to all."""
    from mlbench.server.routes.meta import router

    assert "/api/health" in {getattr(r, "path", None) for r in router.routes}
    master = _master(renders["default"])["spec"]["template"]["spec"]["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert master[probe]["httpGet"]["path"] == "/api/health"
    test_pod = next(o for o in objects(renders["default"]) if o["kind"] == "Pod")
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = test_pod["spec"]["containers"][0]["command"][-1]
    assert f"http://mlbench.{NAMESPACE}.svc:8000/api/health" in script


def test_notes_say_how_to_reach_the_dashboard_and_create_the_secret() -> None:
    result = helm(
        "install", "mlbench", str(CHART), "-n", NAMESPACE, "--dry-run=client", "--set", "x=1"
    )
    assert result.returncode != 0  # the schema also guards install
    result = helm("install", "mlbench", str(CHART), "-n", NAMESPACE, "--dry-run=client")
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "kubectl -n mlbench port-forward service/mlbench 8000:8000" in notes
    assert "kubectl -n mlbench create secret generic mlbench-db" in notes
    assert "mlbench token create" in notes
    lb = helm(
        "install", "mlbench", str(CHART), "-n", NAMESPACE, "--dry-run=client",
        "--set", "service.type=LoadBalancer",
    )  # fmt: skip
    assert "EXTERNAL-IP" in lb.stdout.split("NOTES:", 1)[1]
