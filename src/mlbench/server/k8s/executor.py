"""``KubernetesExecutor``: the Executor protocol (server/executor.py) on a Kubernetes cluster.

* ``launch`` creates the Job, then the Service and the token Secret owned by it (the Job's uid
  exists only after its create). A retried launch — the scheduler's transaction rolled back
  after a create — finds its own Job by the run-id annotation and replaces the Secret, whose
  token the rollback made stale.
* ``alive`` reads the Job from a watch cache (list, then watch from the list's resourceVersion;
  a 410 Gone relists) when the watch runs, else with one GET. A Job is alive until it has a
  ``Complete`` or ``Failed`` condition — not ``FailureTarget``, whose pods may still run.
* ``outcome`` is rank 0's result.json, which the pod prints as one ``MLBENCH-RESULT:`` line on
  its log (the pods cannot write to the master's disk). ``failure`` says which pod failed and
  why: the ``MLBENCH-ERROR:`` line of its log, its terminated state, or the Job's condition.
  Both are remembered, since the Job's TTL later deletes the pods.
* ``stop`` deletes the Job with Background propagation: the garbage collector then removes its
  pods, Service and Secret. Never the API's default for Jobs, which orphans the pods.

The executor reference: ``{"kind": "kubernetes", "run_id", "namespace", "job", "uid"}``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from typing import Any

from mlbench.server.k8s import manifests
from mlbench.server.k8s.api import Gone, KubeClient, KubeError

KUBERNETES = "kubernetes"
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
ERROR_MARKER = "MLBENCH-ERROR:"
LOG_TAIL_LINES = 200
_PEER_LOSS = ("DistBackendError", "Connection closed", "Connection reset", "Broken pipe", "gloo")

log = logging.getLogger("mlbench.k8s")


def job_ended(job: dict[str, Any]) -> str | None:
    """``Complete``/``Failed`` once the Job controller has finished with it, else None."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return str(cond["type"])
    return None


def _failed_condition(job: dict[str, Any]) -> str | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Failed", "FailureTarget") and cond.get("status") == "True":
            return f"{cond.get('reason', 'Failed')}: {cond.get('message', '')}".rstrip(": ")
    return None


class JobWatch:
    """A cache of this master's Jobs, kept by list + watch. ``step`` is one watch stream (the
    thread loops over it); tests drive it directly."""

    def __init__(self, client: KubeClient, selector: str, timeout_seconds: int = 60) -> None:
        self.client, self.selector, self.timeout = client, selector, timeout_seconds
        self.jobs: dict[str, dict[str, Any]] = {}
        self.resource_version: str | None = None
        self.relists = 0
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def relist(self) -> None:
        listed = self.client.list("jobs", self.selector)
        with self.lock:
            self.jobs = {j["metadata"]["name"]: j for j in listed.get("items") or []}
            self.resource_version = str(listed["metadata"]["resourceVersion"])
        self.relists += 1

    def step(self) -> None:
        if self.resource_version is None:
            self.relist()
        assert self.resource_version is not None
        try:
            for event in self.client.watch(
                "jobs", self.selector, self.resource_version, self.timeout
            ):
                obj = event.get("object") or {}
                meta = obj.get("metadata") or {}
                with self.lock:
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self.jobs[meta["name"]] = obj
                    elif event["type"] == "DELETED":
                        self.jobs.pop(meta["name"], None)
                    if meta.get("resourceVersion"):
                        self.resource_version = str(meta["resourceVersion"])
        except Gone:
            log.info("job watch expired (410 Gone): listing again")
            self.relist()

    def get(self, name: str) -> tuple[bool, dict[str, Any] | None]:
        """(known, job): ``known`` is False until the first list."""
        with self.lock:
            return self.resource_version is not None, self.jobs.get(name)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="mlbench-k8s-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # the API server restarting: back off, then list again
                log.exception("job watch failed")
                self.resource_version = None
                self._stop.wait(5.0)


class KubernetesExecutor:
    def __init__(
        self,
        client: KubeClient,
        placement: manifests.Placement,
        master_url: str | None = None,
        *,
        watch: bool = False,
    ) -> None:
        self.client = client
        self.placement = placement
        self.master_url = master_url or placement.master_url
        self.watch = JobWatch(client, "app.kubernetes.io/managed-by=mlbench") if watch else None
        if self.watch is not None:
            self.watch.start()
        self._ended: dict[str, dict[str, Any]] = {}  # job uid → remembered outcome/failure

    # ------------------------------------------------------------------ launch
    def spec(
        self, run_id: str, config: dict[str, Any], workers: int, backend: str
    ) -> manifests.RunSpec:
        """Workers become nodes × one rank per GPU; a worker count the GPUs per node do not
        divide runs one rank per pod (the world size is the run's, whatever the cluster)."""
        gpus = self.placement.gpus_per_node
        k = gpus if gpus and workers % gpus == 0 else 1
        return manifests.RunSpec(
            run_id=run_id,
            task=str(config["task"]),
            config=config,
            nodes=workers // k,
            nproc_per_node=k,
            backend=backend,
            master_url=self.master_url,
            placement=self.placement,
        )

    def launch(
        self,
        run_id: str,
        config: dict[str, Any],
        workers: int,
        backend: str,
        upload_token: str,
    ) -> dict[str, Any]:
        spec = self.spec(run_id, config, workers, backend)
        job_obj, svc, sec = manifests.run_objects(spec, upload_token)
        try:
            created = self.client.create("jobs", job_obj)
        except KubeError as exc:
            if exc.status != 409:
                raise
            existing = self.client.get("jobs", spec.name)
            notes = ((existing or {}).get("metadata") or {}).get("annotations") or {}
            if existing is None or notes.get(manifests.RUN_ID_LABEL) != run_id:
                raise
            created = existing  # our own Job from a launch whose transaction rolled back
        try:
            self.client.create("services", manifests.owned_by(svc, created))
        except KubeError as exc:
            if exc.status != 409:
                raise
        owned_secret = manifests.owned_by(sec, created)
        try:
            self.client.create("secrets", owned_secret)
        except KubeError as exc:
            if exc.status != 409:
                raise
            self.client.delete("secrets", spec.name)  # immutable, and its token is stale
            self.client.create("secrets", owned_secret)
        return {
            "kind": KUBERNETES,
            "run_id": run_id,
            "namespace": self.client.namespace,
            "job": spec.name,
            "uid": created["metadata"]["uid"],
        }

    # ------------------------------------------------------------------ watch
    def _job(self, ref: dict[str, Any]) -> dict[str, Any] | None:
        """Our Job, or None when it is gone (or a different Job now has its name)."""
        if self.watch is not None:
            known, found = self.watch.get(ref["job"])
            job = found if known else self.client.get("jobs", ref["job"])
        else:
            job = self.client.get("jobs", ref["job"])
        if job is None or job["metadata"].get("uid") != ref.get("uid"):
            return None
        return job

    def alive(self, ref: dict[str, Any]) -> bool:
        if ref.get("kind") != KUBERNETES:
            return False
        job = self._job(ref)
        if job is None:
            return False
        if job_ended(job) is None:
            return True
        self._remember(ref, job)
        return False

    def _pods(self, ref: dict[str, Any]) -> list[dict[str, Any]]:
        listed = self.client.list("pods", f"{manifests.JOB_NAME_LABEL}={ref['job']}")
        pods = [
            p
            for p in listed.get("items") or []
            if any(o.get("uid") == ref["uid"] for o in p["metadata"].get("ownerReferences") or [])
        ]
        return sorted(pods, key=_index)

    def _remember(self, ref: dict[str, Any], job: dict[str, Any]) -> None:
        """Read the outcome once, when the Job ends, before its TTL deletes the pods."""
        if ref["uid"] in self._ended:
            return
        pods = self._pods(ref)
        logs = {p["metadata"]["name"]: self.client.log(p["metadata"]["name"]) for p in pods}
        result = None
        for pod in pods:
            if _index(pod) == 0:
                result = _result_from_log(logs[pod["metadata"]["name"]])
        self._ended[ref["uid"]] = {
            "result": result,
            "failure": _failure(job, pods, logs),
            "nodes": {_index(p): (p.get("spec") or {}).get("nodeName") for p in pods},
        }

    def outcome(self, ref: dict[str, Any]) -> dict[str, Any] | None:
        ended = self._ended.get(ref.get("uid", ""))
        if ended is None:
            job = self._job(ref) if ref.get("kind") == KUBERNETES else None
            if job is None or job_ended(job) is None:
                return None
            self._remember(ref, job)
            ended = self._ended[ref["uid"]]
        result = ended["result"]
        if result is not None:
            result = {**result, "kubernetes": {"job": ref["job"], "nodes": ended["nodes"]}}
        return result

    def failure(self, ref: dict[str, Any]) -> str | None:
        ended = self._ended.get(ref.get("uid", ""))
        if ended is None:
            with contextlib.suppress(KubeError):
                self.outcome(ref)
            ended = self._ended.get(ref.get("uid", ""))
        return ended["failure"] if ended else None

    def stop(self, ref: dict[str, Any]) -> None:
        """Delete the Job, Background propagation: its pods, Service and Secret follow."""
        if ref.get("kind") == KUBERNETES and self._job(ref) is not None:
            self.client.delete("jobs", ref["job"])

    def close(self) -> None:
        if self.watch is not None:
            self.watch.stop()


def _index(pod: dict[str, Any]) -> int:
    notes = pod["metadata"].get("annotations") or {}
    try:
        return int(notes.get(INDEX_ANNOTATION, -1))
    except ValueError:
        return -1


def _result_from_log(text: str) -> dict[str, Any] | None:
    for line in reversed(text.splitlines()):
        if line.startswith(manifests.RESULT_MARKER):
            try:
                result = json.loads(line[len(manifests.RESULT_MARKER) :])
            except ValueError:
                return None
            return result if isinstance(result, dict) else None
    return None


def _terminated(pod: dict[str, Any]) -> dict[str, Any] | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        term = (status.get("state") or {}).get("terminated")
        if term:
            return dict(term)
    return None


def _failure(job: dict[str, Any], pods: list[dict[str, Any]], logs: dict[str, str]) -> str | None:
    """The root cause: a failed pod's own ``MLBENCH-ERROR:`` line, preferring one that is not
    a peer's lost connection (when one rank dies the others fail in a collective moments
    later); else its exit code and reason; else the Job's condition (deadline, eviction)."""
    reasons: list[str] = []
    for pod in pods:
        term = _terminated(pod)
        if term is None or term.get("exitCode", 0) == 0:
            continue
        name = pod["metadata"]["name"]
        lines = [ln for ln in logs.get(name, "").splitlines() if ln.startswith(ERROR_MARKER)]
        if lines:
            reasons.append(lines[-1][len(ERROR_MARKER) :].strip())
            continue
        what = f"pod {name} (node rank {_index(pod)}) exited with code {term.get('exitCode')}"
        detail = term.get("message") or term.get("reason")
        reasons.append(f"{what}: {str(detail).strip().splitlines()[-1]}" if detail else what)
    primary = [r for r in reasons if not any(s in r for s in _PEER_LOSS)]
    if primary or reasons:
        return (primary or reasons)[0][:1000]
    return _failed_condition(job)
