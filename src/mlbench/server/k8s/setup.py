"""Building the Kubernetes executor from ``mlbench serve``'s options and the chart's settings."""

from __future__ import annotations

import json
import os
from pathlib import Path

from mlbench.errors import ConfigError
from mlbench.server.k8s.api import KubeClient, KubeConfig
from mlbench.server.k8s.executor import KubernetesExecutor
from mlbench.server.k8s.manifests import Placement


def load_placement(path: str | None) -> Placement:
    if not path:
        raise ConfigError(
            "--executor kubernetes needs --k8s-config FILE ($MLBENCH_KUBERNETES_CONFIG): the "
            "runs' image, namespace and resources (the Helm chart writes it)"
        )
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the Kubernetes executor settings {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return Placement.from_config(data)


def kubernetes_executor(config_path: str | None, api_url: str | None) -> KubernetesExecutor:
    placement = load_placement(config_path)
    if api_url:
        kube = KubeConfig.explicit(
            api_url, placement.namespace, os.environ.get("MLBENCH_K8S_TOKEN")
        )
    else:
        kube = KubeConfig.in_cluster(placement.namespace)
    return KubernetesExecutor(KubeClient(kube), placement, watch=True)
