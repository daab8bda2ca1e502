"""A "fake kubelet": runs a rendered Indexed Job's pods as local processes, as faithfully as the
run needs (CLUSTERS.md §6, 2d).

What it does like the kubelet and the Job controller:

* one process per completion index, with ``JOB_COMPLETION_INDEX`` in its environment;
* the container's ``env`` in order, ``valueFrom.fieldRef`` (``spec.nodeName``, ``metadata.name``)
  filled in, and ``$(VAR)`` expanded in env values and in ``command``/``args`` (``$$`` is a
  literal ``$``; an undefined ``$(VAR)`` stays as written) — the kubelet's rules, not a shell's;
* the Secret volume as files at its ``mountPath`` (``defaultMode``), an emptyDir per pod at
  ``/tmp`` (so pods share no files), each pod in its own mount namespace (``unshare -m``);
* the headless Service's DNS: an ``/etc/hosts`` bind-mounted into every pod maps
  ``<job>-<i>.<svc>`` (and the master's host name) to this machine;
* every pod in one network namespace of its own (``unshare -n`` around this module), so the
  fixed rendezvous port 29500 cannot meet another test's;
* the pod log is the container's stdout and stderr together.

Not emulated: the image (the host's Python runs the pod's command), ``readOnlyRootFilesystem``,
resource limits, the user id, separate pod IPs (all pods share 127.0.0.1).

Run as ``unshare -n python -m tests.support.fake_kubelet PLAN.json``; it also serves a stub
master on the plan's port that records each upload request's path and bearer token, and writes
``report.json`` (exit codes, logs, uploads, wall time) beside the plan.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """The kubelet's ``$(VAR)`` expansion (kubernetes third_party/forked/golang/expansion)."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)

    return _REF.sub(sub, text)


def _pod_tmp(tmp_dir: Path, keep: list[str]) -> str:
    """Shell that gives the pod its own /tmp (an emptyDir), keeping visible what this machine's
    runner lives in under /tmp (a checkout, its venv, the data: CI may clone into /tmp): the
    host's /tmp is parked on /run first, then each kept top-level directory is bound back."""
    tops = sorted({Path(*Path(k).parts[:3]) for k in keep if Path(k).parts[1:2] == ("tmp",)})
    if not tops:
        return f"mount --bind {tmp_dir} /tmp; "
    cmd = f"mkdir -p /run/host-tmp; mount --bind /tmp /run/host-tmp; mount --bind {tmp_dir} /tmp; "
    for top in tops:
        rel = top.relative_to("/tmp")
        cmd += f"mkdir -p {top}; mount --bind /run/host-tmp/{rel} {top}; "
    return cmd


def pod_env(container: dict[str, Any], index: int, pod: str, node: str) -> dict[str, str]:
    fields = {"spec.nodeName": node, "metadata.name": pod}
    env = {"JOB_COMPLETION_INDEX": str(index)}  # the Job controller adds it to every container
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = expand(item["value"], env)
        else:
            env[item["name"]] = fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def pod_argv(container: dict[str, Any], env: dict[str, str]) -> list[str]:
    return [expand(a, env) for a in [*container.get("command", []), *container.get("args", [])]]


class _StubMaster(BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, Any]]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        self.seen.append(
            {
                "method": self.command,
                "path": self.path,
                "auth": self.headers.get("Authorization"),
                "events": len(body.get("events", [])),
            }
        )
        data = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_POST = do_PUT = _answer

    def log_message(self, *args: Any) -> None:
        pass


def main(plan_file: str) -> int:
    plan = json.loads(Path(plan_file).read_text())
    work = Path(plan_file).parent
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    server = ThreadingHTTPServer(("127.0.0.1", plan["master_port"]), _StubMaster)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    pod_spec = plan["template"]["spec"]
    (container,) = pod_spec["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    secret_volume = next(v for v in pod_spec["volumes"] if "secret" in v)
    hosts = work / "hosts"
    hosts.write_text(
        Path("/etc/hosts").read_text()
        + "".join(f"127.0.0.1 {name}\n" for name in plan["host_names"])
    )
    procs = []
    started = time.perf_counter()
    for pod in plan["pods"]:
        pod_dir = work / pod["name"]
        secret_dir, tmp_dir = pod_dir / "secret", pod_dir / "tmp"
        secret_dir.mkdir(parents=True)
        tmp_dir.mkdir()
        tmp_dir.chmod(0o1777)
        for key, value in plan["secret"]["stringData"].items():
            path = secret_dir / key
            path.write_text(value)
            path.chmod(secret_volume["secret"].get("defaultMode", 0o644))
        env = pod_env(container, pod["index"], pod["name"], pod["node"])
        argv = pod_argv(container, env)
        secret_at = mounts[secret_volume["name"]]
        # mounts are set up in the pod's own namespace; /tmp last, as its source may be in /tmp
        unshare = ["unshare", "-m", "--propagation", "private", "/bin/sh", "-c"]
        setup = (
            "set -e; mount -t tmpfs tmpfs /run; "
            f"mkdir -p {secret_at}; mount --bind {secret_dir} {secret_at}; "
            f"mount --bind {hosts} /etc/hosts; "
            + _pod_tmp(tmp_dir, plan.get("keep", []))
            + 'set +e; exec "$@"'
        )
        full_env = {**plan["base_env"], **env}
        log = open(pod_dir / "log", "wb")  # noqa: SIM115 - closed after the wait
        procs.append(
            (
                pod,
                log,
                subprocess.Popen(
                    [*unshare, setup, "pod", *argv],
                    env=full_env,
                    cwd="/",
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                ),
            )
        )
    codes = {}
    for pod, log, proc in procs:
        codes[pod["name"]] = proc.wait(timeout=plan["timeout"])
        log.close()
    report = {
        "wall_seconds": time.perf_counter() - started,
        "exit_codes": codes,
        "logs": {p["name"]: (work / p["name"] / "log").read_text() for p in plan["pods"]},
        "argv": argv,
        "uploads": _StubMaster.seen,
    }
    (work / "report.json").write_text(json.dumps(report, indent=2))
    server.shutdown()
    return 0


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main(sys.argv[1]))
