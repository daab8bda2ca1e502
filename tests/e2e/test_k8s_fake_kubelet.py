"""The executor's rendered Job, run for real: the Kubernetes executor launches a 2-node run of
task 2a against the fake API server, the fake kubelet (tests/support/fake_kubelet.py) runs its
pod template as local processes — one per completion index, the kubelet's ``$(VAR)``
expansion, the Secret's token and config as files, ``<job>-0.<svc>`` resolving to this machine
— and the pods' exit codes and logs go back into the fake API, from which the executor reads the
run's outcome: rank 0's result.json, finished, its events uploaded with the run's token."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlbench.server.k8s import manifests
from mlbench.server.k8s.api import KubeClient, KubeConfig
from mlbench.server.k8s.executor import KubernetesExecutor
from mlbench.server.services import resolve_run_config

from ..support.fake_k8s import FakeKube
from ..support.fake_kubelet import expand

REPO = Path(__file__).resolve().parents[2]
MASTER_PORT = 8000


def _namespaces_available() -> str | None:
    probe = subprocess.run(
        ["unshare", "-n", "-m", "--propagation", "private", "true"], capture_output=True
    )
    return None if probe.returncode == 0 else probe.stderr.decode().strip() or "unshare failed"


def test_kubelet_expansion_rules() -> None:
    env = {"A": "1", "B": "x"}
    assert expand("--r $(A) $(B)$(A)", env) == "--r 1 x1"
    assert expand("$$(A) $(MISSING) $HOME ${B}", env) == "$(A) $(MISSING) $HOME ${B}"


def test_a_two_node_run_of_task_2a_through_the_rendered_job(
    real_data: Path, tmp_path: Path
) -> None:
    why = _namespaces_available()
    if why is not None:
        pytest.skip(f"the fake kubelet needs mount and network namespaces (root): {why}")
    from mlbench.config import to_dict

    fake = FakeKube()
    client = KubeClient(KubeConfig.explicit("https://k8s.test", fake.namespace), fake.transport())
    placement = manifests.Placement(image="mlbench/mlbench:test", namespace=fake.namespace)
    executor = KubernetesExecutor(client, placement, f"http://mlbench-master:{MASTER_PORT}")
    _, cfg = resolve_run_config(
        "epsilon-logreg",
        ["data.dataset=a9a", "train.log_every_steps=5"],
        "light",
        "allreduce",
        str(real_data),
    )
    run_id = "20261201-000000-epsilon-logreg-k8s001"
    ref = executor.launch(run_id, to_dict(cfg), 2, "gloo", "run-token-123")
    nodes = ["kind-worker", "kind-worker2"]
    pods = fake.start_pods(ref["job"], node_names=nodes)
    job = fake.get("jobs", ref["job"])
    plan = {
        "template": job["spec"]["template"],
        "secret": fake.get("secrets", ref["job"]),
        "pods": [{"name": n, "index": i, "node": nodes[i]} for i, n in enumerate(pods)],
        "host_names": [f"{ref['job']}-{i}.{ref['job']}" for i in range(2)] + ["mlbench-master"],
        "master_port": MASTER_PORT,
        # what the pods' processes need from this machine (kept visible under the pods' /tmp)
        "keep": [str(REPO), sys.prefix, str(real_data)],
        "timeout": 240,
        "base_env": {
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
            "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
            "LANG": "C.UTF-8",
        },
    }
    work = tmp_path / "kubelet"
    work.mkdir()
    (work / "plan.json").write_text(json.dumps(plan))
    started = time.perf_counter()
    subprocess.run(
        [
            "unshare",
            "-n",
            sys.executable,
            "-m",
            "tests.support.fake_kubelet",
            str(work / "plan.json"),
        ],
        cwd=REPO,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        },
        check=True,
        timeout=300,
    )
    report = json.loads((work / "report.json").read_text())
    wall = time.perf_counter() - started
    print(f"fake-kubelet run: {report['wall_seconds']:.1f} s for the pods, {wall:.1f} s in all")
    logs = report["logs"]
    assert list(report["exit_codes"].values()) == [0, 0], logs
    # the kubelet expanded the index; each rank said where it ran
    assert "--node-rank '1'" in report["argv"][2]
    assert "node rank 0 on node kind-worker\n" in logs[pods[0]]
    assert "node rank 1 on node kind-worker2\n" in logs[pods[1]]
    # both agents uploaded their own ranks' events with the token from the mounted Secret
    posts = [u for u in report["uploads"] if u["method"] == "POST"]
    assert posts and {u["auth"] for u in report["uploads"]} == {"Bearer run-token-123"}
    assert {u["path"] for u in posts} == {f"/api/runs/{run_id}/events"}
    # the pods' ends go back into the API; the executor reads the outcome from there
    for pod in pods:
        fake.pod_exit(pod, report["exit_codes"][pod], logs[pod])
    assert not executor.alive(ref)
    result = executor.outcome(ref)
    assert result is not None, logs[pods[0]][-2000:]
    assert result["state"] == "finished" and result["world_size"] == 2
    assert result["run_id"] == run_id
    assert result["goal"]["reached"] is True
    assert result["kubernetes"]["nodes"] == dict(enumerate(nodes))
