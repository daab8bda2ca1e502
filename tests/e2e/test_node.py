"""``mlbench node``: two agents on this machine (two "nodes" of one rank each) running a real
2-rank run of task 2a, a rank failure on node 1, and the bounded wait for the master address."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psutil

from mlbench.launch.local import free_port
from mlbench.launch.node import gather_outcome
from mlbench.launch.session import LaunchRequest, LaunchSession
from mlbench.telemetry.events import read_events

from .helpers import cli_env, leftover_workers, read_result


def _prepare(real_data: Path, tmp_path: Path, *extra: str) -> LaunchSession:
    """What an engine's launcher does before it starts the agents: check, make the run dir."""
    session = LaunchSession(
        LaunchRequest(
            task="epsilon-logreg",
            workers=2,
            overrides=[f"data.dir={real_data}", "data.dataset=a9a", "goal=light", *extra],
            threads_per_worker=1,
            runs_dir=tmp_path / "runs",
        )
    )
    session.preflight()
    session.prepare()
    return session


NODE = [sys.executable, "-m", "mlbench.cli.main", "node", "--nnodes", "2"]


def _agents(run_dir: Path, home: Path, **env: str) -> list[subprocess.Popen[str]]:
    port = str(free_port())
    return [
        subprocess.Popen(
            [
                *NODE,
                *("--node-rank", str(node), "--master-addr", "127.0.0.1", "--master-port", port),
                *("--nproc-per-node", "1", "--run-dir", str(run_dir), "--threads-per-worker", "1"),
            ],
            env=cli_env(home, **env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for node in (0, 1)
    ]


def _finish(agents: list[subprocess.Popen[str]], timeout: float = 120) -> list[tuple[int, str]]:
    done = []
    for a in agents:
        _, err = a.communicate(timeout=timeout)
        done.append((a.returncode, err))
    return done


def test_two_agents_run_task_2a_together(real_data: Path, tmp_path: Path) -> None:
    session = _prepare(real_data, tmp_path)
    run_dir = session.run_dir
    assert run_dir is not None
    (node0, err0), (node1, err1) = _finish(_agents(run_dir, tmp_path))
    assert (node0, node1) == (0, 0), err0 + err1
    assert "MLBENCH-ERROR" not in err0 + err1
    for rank in (0, 1):  # each node's rank wrote its files under its global rank
        assert (run_dir / f"rank-{rank}.stdout").exists()
        assert (run_dir / f"rank-{rank}.stderr").exists()
        assert [r for r in read_events(run_dir / f"rank-{rank}.jsonl") if r["kind"] == "train"]
    nodes = [json.loads((run_dir / f"node-{n}.json").read_text()) for n in (0, 1)]
    assert [n["ranks"] for n in nodes] == [[0], [1]]
    assert [n["state"] for n in nodes] == ["finished", "finished"]
    # rank 0 (under node 0's agent) wrote the result of a 2-rank run
    result = read_result(run_dir)
    assert result["state"] == "finished"
    assert result["world_size"] == 2
    assert result["goal"]["reached"] is True
    assert len(result["ranks"]) == 2
    # the launcher that prepared the run completes it from the nodes' outcomes
    outcome = gather_outcome(run_dir, 2)
    assert outcome is not None and outcome.state == "finished"
    final = session.finalize(outcome)
    assert final["launcher"]["exit_codes"] == [0, 0]
    assert read_result(run_dir)["launcher"]["exit_codes"] == [0, 0]


def test_a_rank_failing_on_node_1_ends_both_agents(real_data: Path, tmp_path: Path) -> None:
    session = _prepare(
        real_data, tmp_path, "algorithm.name=tests.e2e.faulty:RaiseAtStep", "train.max_steps=500"
    )
    run_dir = session.run_dir
    assert run_dir is not None
    agents = _agents(run_dir, tmp_path, FAULT_RANK="1", FAULT_STEP="3")
    pids = [a.pid for a in agents]
    start = time.monotonic()
    (node0, err0), (node1, err1) = _finish(agents, timeout=60)
    assert time.monotonic() - start < 45
    assert node0 != 0 and node1 != 0
    # node 1 names its rank and the real error, in one line an engine can take
    lines = [ln for ln in err1.splitlines() if ln.startswith("MLBENCH-ERROR:")]
    assert lines == ["MLBENCH-ERROR: rank 1: RuntimeError: injected failure for the test"]
    assert [ln for ln in err0.splitlines() if ln.startswith("MLBENCH-ERROR:")]  # peer lost
    assert not leftover_workers(run_dir)
    assert not [p for p in pids if psutil.pid_exists(p)]
    # across the nodes, the root cause wins over node 0's lost connection
    outcome = gather_outcome(run_dir, 2)
    assert outcome is not None and outcome.state == "failed"
    assert outcome.reason == "rank 1: RuntimeError: injected failure for the test"
    result = session.finalize(outcome)
    assert result["state"] == "failed" and "injected failure" in result["reason"]
    assert read_result(run_dir)["state"] == "failed"


def test_an_unresolvable_master_fails_in_one_line(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text("{}")  # never read: the agent stops before any rank
    start = time.monotonic()
    proc = subprocess.run(
        [
            *NODE,
            *("--node-rank", "1", "--master-addr", "no-such-host.invalid", "--master-port", "1"),
            *("--run-dir", str(run_dir), "--resolve-timeout", "1"),
        ],
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert time.monotonic() - start < 30
    assert proc.returncode == 2
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("MLBENCH-ERROR:")]
    assert len(errors) == 1 and "'no-such-host.invalid' did not resolve within 1 s" in errors[0]
    assert "Traceback" not in proc.stderr
    assert not list(run_dir.glob("rank-*"))
