"""The per-run Kubernetes objects, as plain dicts (CLUSTERS.md §1.2).

One run is three objects, all labelled ``mlbench.io/run-id``:

* an **Indexed Job**: one pod per node (``completions = parallelism = nodes``), fail fast
  (``backoffLimit: 0`` and a pod failure policy that fails the Job on any non-zero exit: a
  benchmark wants a clean failure, not a restarted rank), a deadline from the run's budget and a
  TTL long enough for the master to read the outcome;
* a **headless Service** giving pod 0 the stable name ``<job>-0.<svc>`` the other ranks
  rendezvous on (``publishNotReadyAddresses``: ranks resolve it before any pod is Ready);
* a **Secret** with the run's upload token (and its resolved config), mounted as files — never an
  environment variable, which leaks into ``kubectl describe`` and crash dumps.

The Service and Secret get an ``ownerReference`` to the Job once the Job exists (its uid comes
back from the create), so one Background delete of the Job removes all three.

Dicts, not a client library's models: the objects are golden-tested and schema-validated as
they are sent, and the master needs no Kubernetes package.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from mlbench.errors import ConfigError

RUN_ID_LABEL = "mlbench.io/run-id"
MANAGED_BY = {"app.kubernetes.io/managed-by": "mlbench"}
KUEUE_LABEL = "kueue.x-k8s.io/queue-name"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
RDZV_PORT = 29500
SECRET_DIR = "/var/run/mlbench"
TOKEN_FILE = f"{SECRET_DIR}/token"
CONFIG_FILE = f"{SECRET_DIR}/config.json"
#: the run directory's name is the run id: result.json and the uploader take the id from it
RUNS_DIR = "/tmp/runs"
#: rank 0's result.json, one line on the pod's log: how the master reads the outcome back
#: without a shared filesystem (``pods/log`` is in the Role; the pod has no API access)
RESULT_MARKER = "MLBENCH-RESULT: "
UID = 10001  # the worker image's non-root user (docker/Dockerfile)
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
#: Indexed Job pods get the host name ``<job>-<index>``, a DNS label (63): leave room for it
_MAX_JOB_NAME = 52


def job_name(run_id: str) -> str:
    """A DNS-1123 name for the run's Job (and Service, Secret): ``mlb-`` plus the run id in
    lower case, shortened with a hash of the full id when too long so names stay unique."""
    slug = re.sub(r"[^a-z0-9-]+", "-", run_id.lower()).strip("-")
    name = f"mlb-{slug}"
    if len(name) > _MAX_JOB_NAME:
        digest = hashlib.sha256(run_id.encode()).hexdigest()[:8]
        name = f"{name[: _MAX_JOB_NAME - 9].rstrip('-')}-{digest}"
    return name


def run_label(run_id: str) -> str:
    """The run id as a label value (63 characters, a restricted alphabet); the full id is also
    an annotation, so nothing is lost when this has to be a hash."""
    if len(run_id) <= 63 and _LABEL_VALUE.match(run_id):
        return run_id
    return hashlib.sha256(run_id.encode()).hexdigest()[:40]


#: the keys of the chart's executor settings file (charts/mlbench/templates/configmap.yaml,
#: ``$MLBENCH_KUBERNETES_CONFIG``) → Placement fields
CONFIG_KEYS = {
    "namespace": "namespace",
    "image": "image",
    "imagePullPolicy": "image_pull_policy",
    "imagePullSecrets": "image_pull_secrets",
    "serviceAccountName": "service_account",
    "masterUrl": "master_url",
    "uid": "uid",
    "resources": "resources",
    "gpus": "gpus_per_node",
    "nodeSelector": "node_selector",
    "tolerations": "tolerations",
    "shmSize": "shm",
    "ttlSecondsAfterFinished": "ttl_seconds",
    "activeDeadlineSeconds": "deadline_seconds",
    "kueueQueue": "queue",
    "labels": "labels",
    "spread": "spread",
}


@dataclass
class Placement:
    """Where and how big each node's pod is, the same for every run this master launches: the
    chart's executor settings (:meth:`from_config`) or ``mlbench serve --k8s-*`` options."""

    image: str
    namespace: str = "default"
    service_account: str = "mlbench-worker"
    master_url: str | None = None
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: list[dict[str, str]] = field(default_factory=list)
    uid: int = UID
    resources: dict[str, dict[str, str]] = field(
        default_factory=lambda: {"requests": {"cpu": "1", "memory": "2Gi"}}
    )
    gpus_per_node: int = 0
    shm: str = "1Gi"
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    queue: str | None = None  # a Kueue LocalQueue: the Job is created suspended and labelled
    deadline_seconds: int = 24 * 3600
    ttl_seconds: int = 3600
    labels: dict[str, str] = field(default_factory=dict)
    #: ranks on different nodes (required anti-affinity): inter-node benchmarks measure the
    #: network, not loopback. Off only for single-node clusters (kind with one worker).
    spread: bool = True

    def __post_init__(self) -> None:
        if not self.image:
            raise ConfigError("the Kubernetes executor needs a worker image")
        if self.gpus_per_node < 0:
            raise ConfigError("gpus per node must be >= 0")
        if self.deadline_seconds < 1 or self.ttl_seconds < 0:
            raise ConfigError("deadline must be >= 1 s and TTL >= 0 s")
        if set(self.resources) - {"requests", "limits"}:
            raise ConfigError("resources takes only requests and limits")
        self.queue = self.queue or None

    @classmethod
    def from_config(cls, data: dict[str, Any]) -> Placement:
        """The chart's settings file; an unknown key is an error, not silently ignored."""
        unknown = sorted(set(data) - set(CONFIG_KEYS))
        if unknown:
            raise ConfigError(f"unknown Kubernetes executor setting(s): {', '.join(unknown)}")
        return cls(**{CONFIG_KEYS[k]: v for k, v in data.items()})


@dataclass
class RunSpec:
    """One run as the executor launches it."""

    run_id: str
    task: str
    config: dict[str, Any]
    nodes: int
    nproc_per_node: int
    backend: str
    master_url: str | None
    placement: Placement

    @property
    def name(self) -> str:
        return job_name(self.run_id)

    @property
    def run_dir(self) -> str:
        return f"{RUNS_DIR}/{self.run_id}"

    def labels(self) -> dict[str, str]:
        return {**self.placement.labels, **MANAGED_BY, RUN_ID_LABEL: run_label(self.run_id)}

    def metadata(self, name: str) -> dict[str, Any]:
        return {
            "name": name,
            "namespace": self.placement.namespace,
            "labels": self.labels(),
            "annotations": {RUN_ID_LABEL: self.run_id},
        }


def agent_argv(spec: RunSpec) -> list[str]:
    """The node agent's command line, with ``$(JOB_COMPLETION_INDEX)`` left for the kubelet to
    expand (the Job controller sets it in every pod of an Indexed Job)."""
    argv = [
        "mlbench",
        "node",
        "--nnodes",
        str(spec.nodes),
        "--node-rank",
        "$(JOB_COMPLETION_INDEX)",
        "--master-addr",
        f"{spec.name}-0.{spec.name}",
        "--master-port",
        str(RDZV_PORT),
        "--nproc-per-node",
        str(spec.nproc_per_node),
        "--run-dir",
        spec.run_dir,
        "--backend",
        spec.backend,
    ]
    if spec.master_url:
        argv += ["--upload", spec.master_url, "--upload-token-file", TOKEN_FILE]
    return argv


def container_command(spec: RunSpec) -> list[str]:
    """``sh -c`` around the agent. It prepares the run directory (the agent runs a prepared one:
    the resolved config from the Secret), logs the node this rank runs on, forwards SIGTERM to
    the agent (a shell as PID 1 would ignore it), and after the agent exits prints rank 0's
    result.json as one ``MLBENCH-RESULT:`` log line — the master's way to read the outcome, as
    the pods share no filesystem with it. JSON strings hold no raw newlines, so dropping them
    keeps the document intact. The kubelet expands ``$(JOB_COMPLETION_INDEX)`` inside the
    script before the shell runs it (it knows no shell quoting)."""
    run_dir = shlex.quote(spec.run_dir)
    script = (
        f"mkdir -p {run_dir} && cp {CONFIG_FILE} {run_dir}/config.json || exit 2; "
        'echo "mlbench: node rank $(JOB_COMPLETION_INDEX) on node ${NODE_NAME:-?}" >&2; '
        "trap 'kill -TERM \"$pid\" 2>/dev/null' TERM; "
        f"{shlex.join(agent_argv(spec))} & "
        'pid=$!; wait "$pid"; rc=$?; '
        'if [ "$rc" -gt 128 ]; then wait "$pid"; rc=$?; fi; '
        f"if [ -f {run_dir}/result.json ]; then "
        f"printf '%s' '{RESULT_MARKER}'; tr -d '\\n' < {run_dir}/result.json; echo; fi; "
        'exit "$rc"'
    )
    return ["/bin/sh", "-c", script]


def _security_context(uid: int) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_spec(spec: RunSpec) -> dict[str, Any]:
    p = spec.placement
    resources: dict[str, dict[str, str]] = {
        k: {**v} for k, v in p.resources.items() if v is not None
    }
    if p.gpus_per_node:
        resources.setdefault("limits", {})["nvidia.com/gpu"] = str(p.gpus_per_node)
    container: dict[str, Any] = {
        "name": "node",
        "image": p.image,
        "imagePullPolicy": p.image_pull_policy,
        "command": container_command(spec),
        "env": [
            {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "MLBENCH_RUN_ID", "value": spec.run_id},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            {"name": "HOME", "value": "/tmp"},
        ],
        "ports": [{"name": "rdzv", "containerPort": RDZV_PORT, "protocol": "TCP"}],
        "resources": resources,
        "securityContext": _security_context(p.uid),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            {"name": "run-secret", "mountPath": SECRET_DIR, "readOnly": True},
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    out: dict[str, Any] = {
        "restartPolicy": "Never",
        "subdomain": spec.name,
        "serviceAccountName": p.service_account,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": p.uid,
            "runAsGroup": p.uid,
            "fsGroup": p.uid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {
                "name": "run-secret",
                "secret": {"secretName": spec.name, "defaultMode": 0o440},
            },
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": p.shm}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    if spec.nodes > 1 and p.spread:
        out["affinity"] = {
            "podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "labelSelector": {"matchLabels": {JOB_NAME_LABEL: spec.name}},
                        "topologyKey": "kubernetes.io/hostname",
                    }
                ]
            }
        }
    if p.node_selector:
        out["nodeSelector"] = dict(p.node_selector)
    if p.tolerations:
        out["tolerations"] = [dict(t) for t in p.tolerations]
    if p.image_pull_secrets:
        out["imagePullSecrets"] = [dict(s) for s in p.image_pull_secrets]
    return out


def job(spec: RunSpec) -> dict[str, Any]:
    p = spec.placement
    meta = spec.metadata(spec.name)
    if p.queue:
        meta["labels"][KUEUE_LABEL] = p.queue
    job_spec: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": spec.nodes,
        "parallelism": spec.nodes,
        "backoffLimit": 0,
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "FailJob",
                    "onExitCodes": {"containerName": "node", "operator": "NotIn", "values": [0]},
                }
            ]
        },
        "activeDeadlineSeconds": p.deadline_seconds,
        "ttlSecondsAfterFinished": p.ttl_seconds,
        "template": {"metadata": {"labels": spec.labels()}, "spec": pod_spec(spec)},
    }
    if p.queue:
        job_spec["suspend"] = True  # Kueue admits (unsuspends) the whole Job at once
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": job_spec}


def service(spec: RunSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": spec.metadata(spec.name),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {JOB_NAME_LABEL: spec.name},
            "ports": [{"name": "rdzv", "port": RDZV_PORT, "targetPort": RDZV_PORT}],
        },
    }


def secret(spec: RunSpec, upload_token: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": spec.metadata(spec.name),
        "type": "Opaque",
        "immutable": True,
        "stringData": {
            "token": upload_token,
            "config.json": json.dumps(spec.config, indent=2, sort_keys=True) + "\n",
        },
    }


def owned_by(obj: dict[str, Any], job_obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` with an ownerReference to the created Job (its uid is known only after the
    create): the garbage collector then deletes it with the Job (Background propagation)."""
    meta = job_obj["metadata"]
    ref = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": False,
        # no blockOwnerDeletion: with the OwnerReferencesPermissionEnforcement admission plugin
        # it needs update on jobs/finalizers, which the master's Role does not grant
    }
    out = json.loads(json.dumps(obj))
    out["metadata"]["ownerReferences"] = [ref]
    return out


def run_objects(spec: RunSpec, upload_token: str) -> list[dict[str, Any]]:
    """The three objects in creation order (the Service and Secret still without owner)."""
    return [job(spec), service(spec), secret(spec, upload_token)]


def jobset(spec: RunSpec) -> dict[str, Any]:
    """The same run as a JobSet (``jobset.x-k8s.io/v1alpha2``), for clusters that run the
    JobSet controller: one replicated Job with the same pod template; JobSet makes the headless
    Service itself (named after the JobSet, ``enableDNSHostnames``), so the master address
    becomes ``<jobset>-node-0-0.<jobset>``. No restarts: a benchmark fails fast. The token
    Secret is not part of the export (create it by hand; the manifest names it)."""
    job_obj = job(spec)
    template = json.loads(json.dumps(job_obj["spec"]["template"]))
    pod = template["spec"]
    pod.pop("subdomain", None)
    master = f"{spec.name}-node-0-0.{spec.name}"
    script = pod["containers"][0]["command"][2]
    pod["containers"][0]["command"][2] = script.replace(f"{spec.name}-0.{spec.name}", master)
    if "affinity" in pod:
        rule = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        rule[0]["labelSelector"] = {"matchLabels": {"jobset.sigs.k8s.io/jobset-name": spec.name}}
    job_spec = {
        k: v for k, v in job_obj["spec"].items() if k not in ("template", "ttlSecondsAfterFinished")
    }
    job_spec.pop("suspend", None)
    job_spec["template"] = template
    meta = spec.metadata(spec.name)
    if spec.placement.queue:
        meta["labels"][KUEUE_LABEL] = spec.placement.queue
    return {
        "apiVersion": "jobset.x-k8s.io/v1alpha2",
        "kind": "JobSet",
        "metadata": meta,
        "spec": {
            "failurePolicy": {"maxRestarts": 0},
            "network": {"enableDNSHostnames": True, "subdomain": spec.name},
            "ttlSecondsAfterFinished": spec.placement.ttl_seconds,
            "replicatedJobs": [{"name": "node", "replicas": 1, "template": {"spec": job_spec}}],
        },
    }
