"""An in-process fake Kubernetes API server (behind ``httpx.MockTransport``) for the executor's
tests: the subset of the API the executor uses, faithful where the executor's correctness
depends on it.

* create/get/list/watch/delete of jobs, services, secrets and pods, plus ``pods/log``;
* uids, a cluster-wide resourceVersion counter, 409 on a duplicate name, 404 on a missing one;
* label selectors (``k=v,k2=v2``) on list and watch;
* watch streams every change after the given resourceVersion, then ends (the server's
  timeout); :meth:`FakeKube.compact` forgets history, so an older resourceVersion gets the
  real server's answer, an ERROR event with a 410 status — the client must list again;
* delete honours ``propagationPolicy``: Background/Foreground delete the dependents (by
  ownerReference uid, recursively); otherwise dependents are **orphaned** (their ownerReference
  to the deleted object removed) as the batch/v1 Job default does, and counted in
  :attr:`FakeKube.orphaned` so a test can assert the executor never orphans;
* a minimal Job controller the test drives: :meth:`start_pods` makes one pod per completion
  index (labels, the index annotation, owner = the Job), :meth:`pod_exit` terminates one with an
  exit code and a log, and the Job's conditions follow the pod failure policy (any non-zero exit
  → ``FailureTarget`` then ``Failed``; every index exited 0 → ``Complete``).

Every request is recorded as (verb, resource) for the RBAC-coverage test.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

_PATH = re.compile(
    r"^/(?:api/v1|apis/batch/v1)/namespaces/(?P<ns>[^/]+)/(?P<res>[a-z]+)"
    r"(?:/(?P<name>[^/]+))?(?:/(?P<sub>[a-z]+))?$"
)
INDEX = "batch.kubernetes.io/job-completion-index"


def _status(code: int, reason: str, message: str) -> httpx.Response:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code}
    return httpx.Response(code, json={**body, "reason": reason, "message": message})


def _matches(obj: dict[str, Any], selector: str | None) -> bool:
    labels = obj["metadata"].get("labels") or {}
    for term in filter(None, (selector or "").split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


@dataclass
class FakeKube:
    namespace: str = "mlbench"
    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    history: list[tuple[int, str, str, dict[str, Any]]] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    deletes: list[tuple[str, str, str | None]] = field(default_factory=list)
    logs: dict[str, str] = field(default_factory=dict)
    orphaned: int = 0
    compacted: int = 0
    _rv: itertools.count[int] = field(default_factory=lambda: itertools.count(100))

    # ------------------------------------------------------------------ transport
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        m = _PATH.match(request.url.path)
        if m is None or m["ns"] != self.namespace:
            return _status(404, "NotFound", f"no route {request.url.path}")
        res, name, sub = m["res"], m["name"], m["sub"]
        params = request.url.params
        resource = f"{res}/{sub}" if sub else res
        method = request.method
        if method == "GET" and name is None:
            verb = "watch" if params.get("watch") in ("1", "true") else "list"
        else:
            verb = {"GET": "get", "POST": "create", "DELETE": "delete"}.get(method, method.lower())
        self.requests.append((verb, resource))
        if verb == "create":
            return self._create(res, json.loads(request.content))
        if verb == "list":
            return self._list(res, params.get("labelSelector"))
        if verb == "watch":
            return self._watch(res, params.get("labelSelector"), int(params["resourceVersion"]))
        assert name is not None
        if (res, name) not in self.objects:
            return _status(404, "NotFound", f'{res} "{name}" not found')
        if verb == "get" and sub == "log":
            return httpx.Response(200, text=self.logs.get(name, ""))
        if verb == "get":
            return httpx.Response(200, json=self.objects[(res, name)])
        if verb == "delete":
            body = json.loads(request.content) if request.content else {}
            policy = body.get("propagationPolicy") or params.get("propagationPolicy")
            self.deletes.append((res, name, policy))
            self._delete(res, name, policy)
            return httpx.Response(200, json={"kind": "Status", "status": "Success"})
        return _status(405, "MethodNotAllowed", method)

    # ------------------------------------------------------------------ storage
    def _record(self, kind: str, res: str, obj: dict[str, Any]) -> None:
        rv = next(self._rv)
        obj["metadata"]["resourceVersion"] = str(rv)
        self.history.append((rv, kind, res, copy.deepcopy(obj)))

    def _create(self, res: str, obj: dict[str, Any]) -> httpx.Response:
        name = obj["metadata"]["name"]
        if (res, name) in self.objects:
            return _status(409, "AlreadyExists", f'{res} "{name}" already exists')
        obj["metadata"]["uid"] = str(uuid.uuid4())
        obj["metadata"].setdefault("namespace", self.namespace)
        obj["metadata"]["creationTimestamp"] = "2026-12-01T00:00:00Z"
        if res == "jobs":
            obj["status"] = {}
        self.objects[(res, name)] = obj
        self._record("ADDED", res, obj)
        return httpx.Response(201, json=obj)

    def _list(self, res: str, selector: str | None) -> httpx.Response:
        items = [
            o for (r, _), o in sorted(self.objects.items()) if r == res and _matches(o, selector)
        ]
        rv = str(self.history[-1][0]) if self.history else "1"
        return httpx.Response(200, json={"items": items, "metadata": {"resourceVersion": rv}})

    def _watch(self, res: str, selector: str | None, since: int) -> httpx.Response:
        if since < self.compacted:
            gone = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
            return httpx.Response(200, text=json.dumps({"type": "ERROR", "object": gone}) + "\n")
        lines = [
            json.dumps({"type": kind, "object": obj})
            for rv, kind, r, obj in self.history
            if rv > since and r == res and _matches(obj, selector)
        ]
        return httpx.Response(200, text="".join(line + "\n" for line in lines))

    def _delete(self, res: str, name: str, policy: str | None) -> None:
        obj = self.objects.pop((res, name))
        self._record("DELETED", res, obj)
        uid = obj["metadata"]["uid"]
        for key, dep in list(self.objects.items()):
            refs = dep["metadata"].get("ownerReferences") or []
            if not any(r.get("uid") == uid for r in refs):
                continue
            if policy in ("Background", "Foreground"):
                if key in self.objects:
                    self._delete(key[0], key[1], policy)
            else:  # orphan: the API's default for batch/v1 Jobs
                dep["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid]
                self.orphaned += 1
                self._record("MODIFIED", key[0], dep)

    def compact(self) -> None:
        """Forget the history: watches from an older resourceVersion now get 410 Gone."""
        self.compacted = next(self._rv)

    # ------------------------------------------------------------------ job controller
    def get(self, res: str, name: str) -> dict[str, Any]:
        return self.objects[(res, name)]

    def start_pods(self, job_name: str, node_names: list[str] | None = None) -> list[str]:
        """One Running pod per completion index, as the Job controller and kubelet make them."""
        job = self.get("jobs", job_name)
        template = job["spec"]["template"]
        names = []
        for i in range(int(job["spec"]["completions"])):
            name = f"{job_name}-{i}-{uuid.uuid4().hex[:5]}"
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "labels": {
                        **(template["metadata"].get("labels") or {}),
                        "batch.kubernetes.io/job-name": job_name,
                        "batch.kubernetes.io/job-completion-index": str(i),
                    },
                    "annotations": {INDEX: str(i)},
                    "ownerReferences": [
                        {
                            "apiVersion": "batch/v1",
                            "kind": "Job",
                            "name": job_name,
                            "uid": job["metadata"]["uid"],
                            "controller": True,
                        }
                    ],
                },
                "spec": {
                    **copy.deepcopy(template["spec"]),
                    "hostname": f"{job_name}-{i}",
                    "nodeName": (node_names or [f"node-{j}" for j in range(99)])[i],
                },
                "status": {
                    "phase": "Running",
                    "containerStatuses": [{"name": "node", "state": {"running": {}}}],
                },
            }
            self._create("pods", pod)
            names.append(name)
        job["status"] = {"active": len(names), "startTime": "2026-12-01T00:00:01Z"}
        self._record("MODIFIED", "jobs", job)
        return names

    def pod_exit(self, pod_name: str, code: int, log: str = "", reason: str = "") -> None:
        pod = self.get("pods", pod_name)
        pod["status"] = {
            "phase": "Succeeded" if code == 0 else "Failed",
            "containerStatuses": [
                {
                    "name": "node",
                    "state": {
                        "terminated": {
                            "exitCode": code,
                            "reason": reason or ("Completed" if code == 0 else "Error"),
                        }
                    },
                }
            ],
        }
        self.logs[pod_name] = log
        self._record("MODIFIED", "pods", pod)
        self._sync_job(pod["metadata"]["ownerReferences"][0]["name"])

    def _sync_job(self, job_name: str) -> None:
        job = self.get("jobs", job_name)
        uid = job["metadata"]["uid"]
        pods = [
            p
            for (r, _), p in self.objects.items()
            if r == "pods" and any(o["uid"] == uid for o in p["metadata"]["ownerReferences"])
        ]
        phases = [p["status"]["phase"] for p in pods]
        status = job["status"]
        status["active"] = phases.count("Running")
        status["succeeded"] = phases.count("Succeeded")
        status["failed"] = phases.count("Failed")
        conds = []
        if status["failed"]:
            msg = "Container node for pod exited with a non-zero exit code matching FailJob rule"
            conds.append({"type": "FailureTarget", "status": "True", "reason": "PodFailurePolicy"})
            if not status["active"]:
                conds.append(
                    {
                        "type": "Failed",
                        "status": "True",
                        "reason": "PodFailurePolicy",
                        "message": msg,
                    }
                )
        elif status["succeeded"] == int(job["spec"]["completions"]):
            conds.append({"type": "SuccessCriteriaMet", "status": "True"})
            conds.append({"type": "Complete", "status": "True"})
        status["conditions"] = conds
        self._record("MODIFIED", "jobs", job)
