"""Cloud cluster helpers: the exact commands (argv lists) and files that create, delete or fetch
credentials for a GKE, EKS or kind cluster ready for the Helm chart (CLUSTERS.md §5).

Thin on purpose: each helper only *plans* — a list of argv lists plus the config files they read
— and ``mlbench cluster`` either prints the plan (``--dry-run``) or writes the files and runs the
commands in order. Nothing here talks to a cloud API, so the plans are golden-tested, the eksctl
config is checked against eksctl's published schema, and gcloud's own argument parser checks the
gcloud lines offline. Every ``create`` plan names its teardown (the matching ``delete``), which
the CLI prints first: a half-made cluster still costs money.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field

import yaml

from mlbench.errors import ConfigError

PROVIDERS = ("gke", "eks", "kind")
ACTIONS = ("create", "delete", "credentials")
CHART = "charts/mlbench"

#: GKE accelerator → (machine type with one such GPU per GPU count)
GKE_MACHINES = {
    "nvidia-l4": {
        1: "g2-standard-8",
        2: "g2-standard-24",
        4: "g2-standard-48",
        8: "g2-standard-96",
    },
    "nvidia-tesla-t4": {1: "n1-standard-8", 2: "n1-standard-16", 4: "n1-standard-32"},
    "nvidia-tesla-a100": {1: "a2-highgpu-1g", 2: "a2-highgpu-2g", 4: "a2-highgpu-4g"},
    "nvidia-h100-80gb": {8: "a3-highgpu-8g"},
}
#: EKS GPU → instance type by GPU count (eksctl picks the accelerated AMI and device plugin)
EKS_INSTANCES = {
    "nvidia-a10g": {1: "g5.xlarge", 4: "g5.12xlarge", 8: "g5.48xlarge"},
    "nvidia-l4": {1: "g6.xlarge", 4: "g6.12xlarge", 8: "g6.48xlarge"},
    "nvidia-t4": {1: "g4dn.xlarge", 4: "g4dn.12xlarge", 8: "g4dn.metal"},
}


@dataclass
class ClusterRequest:
    provider: str
    name: str = "mlbench"
    zone: str | None = None  # GKE zone, EKS region; ignored by kind
    nodes: int = 2
    gpus: tuple[str, int] | None = None
    namespace: str = "mlbench"
    release: str = "mlbench"
    chart: str = CHART

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise ConfigError(f"unknown provider {self.provider!r}; one of {', '.join(PROVIDERS)}")
        if self.nodes < 1:
            raise ConfigError("--nodes must be at least 1")
        if self.gpus is not None and self.provider == "kind":
            raise ConfigError("kind clusters have no GPUs (run CPU benchmarks, or use gke/eks)")
        if self.provider != "kind" and not self.zone:
            default = {"gke": "us-central1-a", "eks": "us-west-2"}[self.provider]
            self.zone = default


def parse_gpus(text: str) -> tuple[str, int]:
    """``TYPE:COUNT`` (count per node), e.g. ``nvidia-l4:1``."""
    kind, _, count = text.partition(":")
    try:
        n = int(count or "1")
    except ValueError:
        raise ConfigError(f"--gpus takes TYPE:COUNT, e.g. nvidia-l4:1, not {text!r}") from None
    if not kind or n < 1:
        raise ConfigError(f"--gpus takes TYPE:COUNT with COUNT >= 1, not {text!r}")
    return kind, n


def _lookup(table: dict[str, dict[int, str]], gpus: tuple[str, int], where: str) -> str:
    kind, count = gpus
    if kind not in table:
        raise ConfigError(f"{where}: unknown GPU type {kind!r}; known: {', '.join(sorted(table))}")
    if count not in table[kind]:
        counts = ", ".join(str(c) for c in sorted(table[kind]))
        raise ConfigError(f"{where}: {kind} comes {counts} per node, not {count}")
    return table[kind][count]


@dataclass
class Plan:
    commands: list[list[str]]
    files: dict[str, str] = field(default_factory=dict)
    teardown: list[list[str]] = field(default_factory=list)

    def render(self) -> str:
        """What ``--dry-run`` prints: the files, then the commands, then the teardown."""
        out = []
        for name, text in self.files.items():
            out += [f"# file {name}", text.rstrip("\n"), ""]
        out += [shlex.join(c) for c in self.commands]
        if self.teardown:
            out += ["", "# teardown"] + [shlex.join(c) for c in self.teardown]
        return "\n".join(out) + "\n"


def helm_install(req: ClusterRequest, node_selector: dict[str, str] | None) -> list[str]:
    argv = [
        "helm",
        "upgrade",
        "--install",
        req.release,
        req.chart,
        "--namespace",
        req.namespace,
        "--create-namespace",
        "--wait",
    ]
    if req.gpus is not None:
        argv += ["--set", f"runs.gpus={req.gpus[1]}"]
    if node_selector:
        argv += ["--set-json", f"runs.nodeSelector={json.dumps(node_selector, sort_keys=True)}"]
    return argv


# ---------------------------------------------------------------------------- GKE
def _gke(action: str, req: ClusterRequest) -> Plan:
    where = ["--zone", str(req.zone)]
    creds = ["gcloud", "container", "clusters", "get-credentials", req.name, *where]
    delete = ["gcloud", "container", "clusters", "delete", req.name, *where, "--quiet"]
    if action == "delete":
        return Plan([delete])
    if action == "credentials":
        return Plan([creds])
    system = ["--num-nodes", "1", "--machine-type", "e2-standard-4"]
    cluster = ["gcloud", "container", "clusters", "create", req.name, *where, *system]
    pool = ["gcloud", "container", "node-pools", "create", "runs", "--cluster", req.name, *where]
    selector = None
    if req.gpus is not None:
        machine = _lookup(GKE_MACHINES, req.gpus, "gke")
        kind, count = req.gpus
        pool += [
            "--machine-type",
            machine,
            "--accelerator",
            f"type={kind},count={count},gpu-driver-version=latest",
        ]
        selector = {"cloud.google.com/gke-accelerator": kind}
    else:
        pool += ["--machine-type", "e2-standard-8"]
    pool += ["--num-nodes", str(req.nodes)]
    return Plan([cluster, pool, creds, helm_install(req, selector)], teardown=[delete])


# ---------------------------------------------------------------------------- EKS
def eks_config(req: ClusterRequest) -> dict[str, object]:
    runs: dict[str, object] = {
        "name": "runs",
        "desiredCapacity": req.nodes,
        "minSize": req.nodes,
        "maxSize": req.nodes,
        "labels": {"mlbench.io/pool": "runs"},
    }
    if req.gpus is not None:
        runs["instanceType"] = _lookup(EKS_INSTANCES, req.gpus, "eks")
    else:
        runs["instanceType"] = "m5.2xlarge"
    return {
        "apiVersion": "eksctl.io/v1alpha5",
        "kind": "ClusterConfig",
        "metadata": {"name": req.name, "region": req.zone},
        "managedNodeGroups": [
            {
                "name": "system",
                "instanceType": "m5.large",
                "desiredCapacity": 1,
                "minSize": 1,
                "maxSize": 1,
            },
            runs,
        ],
    }


def _eks(action: str, req: ClusterRequest) -> Plan:
    config = f"{req.name}-eksctl.yaml"
    files = {config: yaml.safe_dump(eks_config(req), sort_keys=False)}
    delete = ["eksctl", "delete", "cluster", "-f", config, "--wait"]
    creds = [
        "eksctl",
        "utils",
        "write-kubeconfig",
        "--cluster",
        req.name,
        "--region",
        str(req.zone),
    ]
    if action == "delete":
        return Plan([delete], files)
    if action == "credentials":
        return Plan([creds])
    selector = {"mlbench.io/pool": "runs"}
    create = ["eksctl", "create", "cluster", "-f", config]
    return Plan([create, creds, helm_install(req, selector)], files, [delete])


# ---------------------------------------------------------------------------- kind
def kind_config(req: ClusterRequest) -> dict[str, object]:
    nodes: list[dict[str, str]] = [{"role": "control-plane"}]
    nodes += [{"role": "worker"} for _ in range(req.nodes)]
    return {"kind": "Cluster", "apiVersion": "kind.x-k8s.io/v1alpha4", "nodes": nodes}


def _kind(action: str, req: ClusterRequest) -> Plan:
    config = f"{req.name}-kind.yaml"
    delete = ["kind", "delete", "cluster", "--name", req.name]
    creds = ["kind", "export", "kubeconfig", "--name", req.name]
    if action == "delete":
        return Plan([delete])
    if action == "credentials":
        return Plan([creds])
    files = {config: yaml.safe_dump(kind_config(req), sort_keys=False)}
    create = ["kind", "create", "cluster", "--name", req.name, "--config", config]
    return Plan([create, helm_install(req, None)], files, [delete])


def plan(action: str, req: ClusterRequest) -> Plan:
    if action not in ACTIONS:
        raise ConfigError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    return {"gke": _gke, "eks": _eks, "kind": _kind}[req.provider](action, req)
