"""The Kubernetes executor against the in-process fake API server (tests/support/fake_k8s.py):
the object sequence and ownership, pod outcomes → run outcomes, Background deletes (never an
orphan), the watch's relist on 410 Gone, and RBAC coverage of every request it made."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlbench.server.k8s import manifests
from mlbench.server.k8s.api import KubeClient, KubeConfig
from mlbench.server.k8s.executor import JobWatch, KubernetesExecutor

from ...support.fake_k8s import FakeKube

REPO = Path(__file__).resolve().parents[3]
RBAC = REPO / "charts" / "mlbench" / "templates" / "rbac.yaml"
GROUP = {"jobs": "batch", "services": "", "secrets": "", "pods": "", "pods/log": ""}
CONFIG = {"task": "epsilon-logreg", "data": {"dataset": "a9a"}}


@pytest.fixture
def fake() -> FakeKube:
    return FakeKube()


@pytest.fixture
def executor(fake: FakeKube) -> Iterator[KubernetesExecutor]:
    client = KubeClient(
        KubeConfig.explicit("https://k8s.test", fake.namespace, "t0k"), fake.transport()
    )
    placement = manifests.Placement(image="mlbench/worker:test", namespace=fake.namespace)
    ex = KubernetesExecutor(client, placement, "http://mlbench-master:8000")
    yield ex
    # whatever a test did, the executor never left pods without their Job
    assert fake.orphaned == 0
    assert all(policy == "Background" for _, _, policy in fake.deletes)


def role_rules() -> list[dict[str, Any]]:
    """The chart's executor Role rules. The template keeps them static YAML below ``rules:``
    (only the metadata is templated), so they parse without rendering the chart."""
    role = next(doc for doc in RBAC.read_text().split("\n---\n") if "\nkind: Role\n" in doc)
    rules = yaml.safe_load(role[role.index("\nrules:\n") :])["rules"]
    assert rules and "{{" not in json.dumps(rules)
    return list(rules)


def result_log(state: str = "finished") -> str:
    result = {"state": state, "task": "epsilon-logreg", "world_size": 2, "reason": None}
    pretty = json.dumps(result, indent=2).replace("\n", "")
    return f"training...\n{manifests.RESULT_MARKER}{pretty}\n"


def test_launch_creates_job_then_owned_service_and_secret(
    fake: FakeKube, executor: KubernetesExecutor
) -> None:
    ref = executor.launch("20261201-000000-epsilon-logreg-abc123", CONFIG, 2, "gloo", "tok-1")
    assert [r for v, r in fake.requests if v == "create"] == ["jobs", "services", "secrets"]
    job = fake.get("jobs", ref["job"])
    assert ref == {
        "kind": "kubernetes",
        "run_id": "20261201-000000-epsilon-logreg-abc123",
        "namespace": "mlbench",
        "job": "mlb-20261201-000000-epsilon-logreg-abc123",
        "uid": job["metadata"]["uid"],
    }
    for res in ("services", "secrets"):
        owners = fake.get(res, ref["job"])["metadata"]["ownerReferences"]
        assert [(o["kind"], o["uid"]) for o in owners] == [("Job", job["metadata"]["uid"])]
    for res in ("jobs", "services", "secrets"):
        labels = fake.get(res, ref["job"])["metadata"]["labels"]
        assert labels[manifests.RUN_ID_LABEL] == ref["run_id"]
    assert fake.get("secrets", ref["job"])["stringData"]["token"] == "tok-1"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 2


def test_a_finished_run_reports_rank_0s_result(
    fake: FakeKube, executor: KubernetesExecutor
) -> None:
    ref = executor.launch("r-ok", CONFIG, 2, "gloo", "tok")
    assert executor.alive(ref)
    pods = fake.start_pods(ref["job"])
    assert executor.alive(ref)
    fake.pod_exit(pods[1], 0, "rank 1 done\n")
    assert executor.alive(ref)  # one index still runs
    fake.pod_exit(pods[0], 0, result_log())
    assert not executor.alive(ref)
    result = executor.outcome(ref)
    assert result is not None and result["state"] == "finished"
    assert result["kubernetes"]["nodes"] == {0: "node-0", 1: "node-1"}
    # the TTL controller deletes the Job and pods later: the outcome was remembered
    fake.objects.clear()
    assert executor.outcome(ref) == result


def test_a_failed_rank_fails_the_run_with_its_own_reason(
    fake: FakeKube, executor: KubernetesExecutor
) -> None:
    ref = executor.launch("r-fail", CONFIG, 2, "gloo", "tok")
    pods = fake.start_pods(ref["job"])
    fake.pod_exit(pods[1], 1, "Traceback...\nMLBENCH-ERROR: rank 1: out of memory in step 7\n")
    assert executor.alive(ref)  # FailureTarget: rank 0 is still being stopped
    peer = "MLBENCH-ERROR: rank 0: DistBackendError: Connection closed by peer\n"
    fake.pod_exit(pods[0], 1, peer)
    assert not executor.alive(ref)
    assert executor.outcome(ref) is None
    assert executor.failure(ref) == "rank 1: out of memory in step 7"


def test_a_pod_killed_without_a_log_line_names_pod_and_exit_code(
    fake: FakeKube, executor: KubernetesExecutor
) -> None:
    ref = executor.launch("r-oom", CONFIG, 1, "gloo", "tok")
    (pod,) = fake.start_pods(ref["job"])
    fake.pod_exit(pod, 137, "", reason="OOMKilled")
    assert not executor.alive(ref)
    assert executor.failure(ref) == f"pod {pod} (node rank 0) exited with code 137: OOMKilled"


def test_stop_deletes_the_job_in_the_background_and_everything_goes(
    fake: FakeKube, executor: KubernetesExecutor
) -> None:
    ref = executor.launch("r-cancel", CONFIG, 2, "gloo", "tok")
    fake.start_pods(ref["job"])
    executor.stop(ref)
    assert fake.deletes == [("jobs", ref["job"], "Background")]
    assert fake.objects == {}  # pods, Service and Secret went with the Job
    assert not executor.alive(ref)
    assert executor.outcome(ref) is None
    executor.stop(ref)  # already gone: nothing more is sent
    assert len(fake.deletes) == 1


def test_the_fake_orphans_on_the_api_default(fake: FakeKube) -> None:
    """The executor's teardown assertion can fail: a delete without propagationPolicy (the
    batch/v1 default) leaves the pods behind, and the fake counts them."""
    client = KubeClient(KubeConfig.explicit("https://k8s.test", fake.namespace), fake.transport())
    ex = KubernetesExecutor(client, manifests.Placement(image="x", namespace="mlbench"))
    ref = ex.launch("r-orphan", CONFIG, 2, "gloo", "tok")
    fake.start_pods(ref["job"])
    client.http.delete(client.path("jobs", ref["job"]))
    assert fake.orphaned == 4  # two pods, the Service, the Secret
    assert {r for r, _ in fake.objects} == {"pods", "services", "secrets"}


def test_a_retried_launch_adopts_its_job_and_replaces_the_stale_token(
    fake: FakeKube, executor: KubernetesExecutor
) -> None:
    first = executor.launch("r-retry", CONFIG, 2, "gloo", "stale")
    again = executor.launch("r-retry", CONFIG, 2, "gloo", "fresh")
    assert again == first
    assert fake.get("secrets", first["job"])["stringData"]["token"] == "fresh"
    assert len([1 for (r, _) in fake.objects if r == "jobs"]) == 1


def test_a_job_of_another_run_with_the_same_name_is_not_adopted(
    fake: FakeKube, executor: KubernetesExecutor
) -> None:
    executor.launch("r-same", CONFIG, 1, "gloo", "tok")
    fake.get("jobs", manifests.job_name("r-same"))["metadata"]["annotations"] = {}
    with pytest.raises(Exception, match="409"):
        executor.launch("r-same", CONFIG, 1, "gloo", "tok")


def test_the_watch_relists_after_410_gone(fake: FakeKube, executor: KubernetesExecutor) -> None:
    watch = JobWatch(executor.client, "app.kubernetes.io/managed-by=mlbench", timeout_seconds=1)
    executor.watch = watch
    ref = executor.launch("r-watch", CONFIG, 1, "gloo", "tok")
    watch.step()  # first list, then the stream
    assert watch.relists == 1 and executor.alive(ref)
    (pod,) = fake.start_pods(ref["job"])
    fake.compact()  # the cache's resourceVersion is now too old
    fake.pod_exit(pod, 0, result_log())
    assert executor.alive(ref)  # the cache has not seen the change yet
    watch.step()
    assert watch.relists == 2, "a 410 must make the watch list again"
    assert not executor.alive(ref)
    sent = [v for v, r in fake.requests if r == "jobs"]
    assert sent.count("watch") == 2 and sent.count("list") == 2
    assert executor.outcome(ref)["state"] == "finished"  # type: ignore[index]


def test_the_watch_follows_changes_without_relisting(
    fake: FakeKube, executor: KubernetesExecutor
) -> None:
    watch = JobWatch(executor.client, "app.kubernetes.io/managed-by=mlbench", timeout_seconds=1)
    executor.watch = watch
    watch.step()
    ref = executor.launch("r-follow", CONFIG, 1, "gloo", "tok")
    watch.step()
    assert executor.alive(ref)
    executor.stop(ref)
    watch.step()
    assert watch.relists == 1
    assert watch.get(ref["job"]) == (True, None)
    assert not executor.alive(ref)


def test_every_request_is_allowed_by_the_role(fake: FakeKube, executor: KubernetesExecutor) -> None:
    """RBAC coverage: drive every executor path, then check each (verb, resource) it sent."""
    watch = JobWatch(executor.client, "app.kubernetes.io/managed-by=mlbench", timeout_seconds=1)
    executor.watch = watch
    watch.step()
    ok = executor.launch("r-rbac-1", CONFIG, 2, "gloo", "tok")
    executor.launch("r-rbac-1", CONFIG, 2, "gloo", "tok")  # the retry path
    pods = fake.start_pods(ok["job"])
    fake.pod_exit(pods[0], 0, result_log())
    fake.pod_exit(pods[1], 1, "MLBENCH-ERROR: boom\n")
    watch.step()
    executor.alive(ok)
    executor.outcome(ok)
    executor.failure(ok)
    bad = executor.launch("r-rbac-2", CONFIG, 1, "gloo", "tok")
    executor.stop(bad)
    fake.compact()
    watch.step()
    rules = role_rules()
    allowed = {
        (verb, group, res)
        for rule in rules
        for verb in rule["verbs"]
        for group in rule["apiGroups"]
        for res in rule["resources"]
    }
    sent = set(fake.requests)
    assert {v for v, _ in sent} >= {"create", "get", "list", "watch", "delete"}
    missing = sorted((v, r) for v, r in sent if (v, GROUP[r], r) not in allowed)
    assert not missing, f"the Role does not allow {missing}"
    assert not any("exec" in r for rule in rules for r in rule["resources"])
