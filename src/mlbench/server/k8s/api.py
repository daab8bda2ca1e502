"""A small Kubernetes API client over httpx: only the calls the executor makes.

Why not the official client: the executor needs a dozen REST calls, httpx is already a
dependency, and the test double (an in-process fake API server behind ``httpx.MockTransport``)
then sees exactly the requests a real server would — which is what the RBAC-coverage test checks.

Credentials: in a pod, the mounted service-account token and CA (re-read for every request: the
kubelet rotates the token); otherwise a base URL and bearer token given by the caller (a
``kubectl proxy`` or a test).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from mlbench.errors import MlbenchError

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")

#: resource → (API path prefix, namespaced collection name)
RESOURCES = {
    "jobs": "/apis/batch/v1",
    "services": "/api/v1",
    "secrets": "/api/v1",
    "pods": "/api/v1",
    "events": "/api/v1",
}


class KubeError(MlbenchError):
    """The API server refused a request or could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Gone(KubeError):
    """410: the watch's resourceVersion is too old; list again and watch from there."""


@dataclass
class KubeConfig:
    base_url: str
    namespace: str
    token: Callable[[], str | None]
    verify: str | bool = True

    @classmethod
    def in_cluster(cls, namespace: str | None = None) -> KubeConfig:
        """The pod's own credentials (KUBERNETES_SERVICE_HOST/PORT, the mounted token and CA)."""
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host or not (SA_DIR / "token").exists():
            raise MlbenchError(
                "--executor kubernetes needs in-cluster credentials (run the master in a pod "
                "with its ServiceAccount token) or --k8s-api-url"
            )
        ns = namespace or (SA_DIR / "namespace").read_text().strip()
        if ":" in host:
            host = f"[{host}]"
        return cls(
            f"https://{host}:{port}",
            ns,
            lambda: (SA_DIR / "token").read_text().strip(),
            str(SA_DIR / "ca.crt"),
        )

    @classmethod
    def explicit(
        cls, base_url: str, namespace: str, token: str | None = None, verify: str | bool = True
    ) -> KubeConfig:
        return cls(base_url.rstrip("/"), namespace, lambda: token, verify)


class KubeClient:
    """Namespaced calls on ``jobs``, ``services``, ``secrets``, ``pods`` (and ``pods/log``)."""

    def __init__(self, config: KubeConfig, transport: httpx.BaseTransport | None = None) -> None:
        self.config = config
        self.namespace = config.namespace
        self.http = httpx.Client(
            base_url=config.base_url, verify=config.verify, transport=transport, timeout=30.0
        )

    def close(self) -> None:
        self.http.close()

    def path(self, resource: str, name: str | None = None, sub: str | None = None) -> str:
        out = f"{RESOURCES[resource]}/namespaces/{self.namespace}/{resource}"
        if name:
            out += f"/{name}"
        if sub:
            out += f"/{sub}"
        return out

    def _headers(self) -> dict[str, str]:
        token = self.config.token()
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        try:
            resp = self.http.request(method, url, headers=self._headers(), **kw)
        except httpx.HTTPError as exc:
            raise KubeError(f"{method} {url}: {exc}") from exc
        if resp.status_code >= 400:
            raise _error(method, url, resp)
        return resp

    def create(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        return dict(self._request("POST", self.path(resource), json=obj).json())

    def get(self, resource: str, name: str) -> dict[str, Any] | None:
        try:
            return dict(self._request("GET", self.path(resource, name)).json())
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, resource: str, selector: str) -> dict[str, Any]:
        return dict(
            self._request("GET", self.path(resource), params={"labelSelector": selector}).json()
        )

    def delete(self, resource: str, name: str) -> bool:
        """Delete with ``propagationPolicy: Background``: the API's default for a Job *orphans*
        its pods (kubernetes/kubernetes#20902). False when it was already gone."""
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        try:
            self._request("DELETE", self.path(resource, name), json=body)
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def log(self, pod: str, tail_lines: int | None = None) -> str:
        params = {"container": "node"}
        if tail_lines is not None:
            params["tailLines"] = str(tail_lines)
        try:
            return self._request("GET", self.path("pods", pod, "log"), params=params).text
        except KubeError as exc:
            if exc.status in (400, 404):  # not started yet, or gone
                return ""
            raise

    def watch(
        self, resource: str, selector: str, resource_version: str, timeout_seconds: int = 60
    ) -> Iterator[dict[str, Any]]:
        """Change events after ``resource_version`` until the server ends the stream. Raises
        :class:`Gone` when that version is too old (as a 410 status or an ERROR event)."""
        params = {
            "watch": "1",
            "labelSelector": selector,
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        url = self.path(resource)
        try:
            with self.http.stream(
                "GET",
                url,
                params=params,
                headers=self._headers(),
                timeout=httpx.Timeout(30.0, read=timeout_seconds + 30.0),
            ) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise _error("WATCH", url, resp)
                for line in resp.iter_lines():
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event.get("type") == "ERROR":
                        status = event.get("object") or {}
                        code = status.get("code")
                        cls = Gone if code == 410 else KubeError
                        raise cls(f"WATCH {url}: {status.get('message', 'error')}", code)
                    yield event
        except httpx.HTTPError as exc:
            raise KubeError(f"WATCH {url}: {exc}") from exc


def _error(method: str, url: str, resp: httpx.Response) -> KubeError:
    try:
        message = resp.json().get("message") or resp.text
    except ValueError:
        message = resp.text
    cls = Gone if resp.status_code == 410 else KubeError
    return cls(f"{method} {url}: {resp.status_code} {message[:300]}", resp.status_code)
