"""The master's scheduler running runs through the Kubernetes executor (against the fake API
server): queued → a Job; pods → the run's state and reason; cancel → a Background delete; and
``mlbench serve --executor kubernetes`` refusing a missing or wrong settings file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from mlbench.server import db
from mlbench.server.k8s import manifests
from mlbench.server.k8s.api import KubeClient, KubeConfig
from mlbench.server.k8s.executor import KubernetesExecutor
from mlbench.server.models import Run
from mlbench.server.scheduler import Scheduler

from ...support.fake_k8s import FakeKube

CONFIG = {"task": "epsilon-logreg", "data": {"dataset": "a9a"}}


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = db.make_engine(f"sqlite:///{tmp_path / 'mlbench.db'}")
    db.upgrade(eng)
    yield eng
    eng.dispose()


def queue(engine: Engine, run_id: str, workers: int = 2) -> None:
    with Session(engine) as s:
        s.add(
            Run(
                id=run_id,
                task="epsilon-logreg",
                state="queued",
                workers=workers,
                backend="gloo",
                algorithm="allreduce",
                goal="light",
                overrides=[],
                config=CONFIG,
            )
        )
        s.commit()


def run_row(engine: Engine, run_id: str) -> Run:
    with Session(engine) as s:
        run = s.get(Run, run_id)
        assert run is not None
        s.expunge(run)
        return run


def setup(engine: Engine) -> tuple[FakeKube, Scheduler]:
    fake = FakeKube()
    client = KubeClient(KubeConfig.explicit("https://k8s.test", fake.namespace), fake.transport())
    placement = manifests.Placement(image="mlbench/mlbench:test", namespace=fake.namespace)
    ex = KubernetesExecutor(client, placement, "http://master:8000")
    return fake, Scheduler(db.session_factory(engine), ex, capacity_workers=4)


def test_a_run_goes_from_queued_to_finished(engine: Engine) -> None:
    fake, sched = setup(engine)
    queue(engine, "r1")
    sched.tick()
    run = run_row(engine, "r1")
    assert run.state == "running" and run.executor_ref is not None
    assert fake.get("secrets", run.executor_ref["job"])["stringData"]["token"]  # its own token
    pods = fake.start_pods(run.executor_ref["job"])
    result = {"schema_version": 1, "state": "finished", "official": True, "reason": None}
    for i, pod in enumerate(pods):
        log = f"{manifests.RESULT_MARKER}{json.dumps(result)}\n" if i == 0 else ""
        fake.pod_exit(pod, 0, log)
    sched.tick()
    run = run_row(engine, "r1")
    assert run.state == "finished" and not run.active
    assert run.result is not None and run.result["kubernetes"]["job"] == run.executor_ref["job"]


def test_a_failed_pod_fails_the_run_with_its_reason(engine: Engine) -> None:
    fake, sched = setup(engine)
    queue(engine, "r2")
    sched.tick()
    ref: dict[str, Any] = run_row(engine, "r2").executor_ref  # type: ignore[assignment]
    pods = fake.start_pods(ref["job"])
    fake.pod_exit(pods[0], 1, "MLBENCH-ERROR: data file a9a.t is truncated at line 12\n")
    fake.pod_exit(pods[1], 1, "MLBENCH-ERROR: rank 1: Connection reset by peer\n")
    sched.tick()
    run = run_row(engine, "r2")
    assert run.state == "failed"
    assert run.reason == "launcher failed: data file a9a.t is truncated at line 12"


def test_cancelling_deletes_the_job_in_the_background(engine: Engine) -> None:
    fake, sched = setup(engine)
    queue(engine, "r3")
    sched.tick()
    ref: dict[str, Any] = run_row(engine, "r3").executor_ref  # type: ignore[assignment]
    fake.start_pods(ref["job"])
    with Session(engine) as s:
        run = s.get(Run, "r3")
        assert run is not None
        run.state = "cancelled"
        s.commit()
    sched.tick()  # still alive: stop it
    assert fake.deletes == [("jobs", ref["job"], "Background")]
    sched.tick()  # gone: no longer active
    run = run_row(engine, "r3")
    assert run.state == "cancelled" and not run.active
    assert fake.objects == {} and fake.orphaned == 0


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (None, "needs --k8s-config"),
        ({"image": "x", "gpu": 1}, "unknown Kubernetes executor setting(s): gpu"),
    ],
)
def test_serve_refuses_bad_kubernetes_settings(
    tmp_path: Path, settings: dict[str, Any] | None, message: str
) -> None:
    args = ["serve", "--executor", "kubernetes", "--k8s-api-url", "http://127.0.0.1:9"]
    if settings is not None:
        (tmp_path / "k.json").write_text(json.dumps(settings))
        args += ["--k8s-config", str(tmp_path / "k.json")]
    env = {"MLBENCH_HOME": str(tmp_path), "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-m", "mlbench.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
