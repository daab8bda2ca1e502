"""mlbench.launch.node without training: the bounded wait for the master address, the ranks and
environment each node gives its workers, the layout checks, the token file, and how the nodes'
outcomes combine. The real two-agent runs are in tests/e2e/test_node.py."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any, ClassVar

import pytest

from mlbench.errors import ConfigError
from mlbench.launch import node
from mlbench.launch.base import Outcome
from mlbench.launch.local import LocalLauncher
from mlbench.launch.node import (
    NodeAgent,
    NodeRequest,
    ResolveError,
    gather_outcome,
    prepare_agent,
    read_token_file,
    wait_for_address,
    write_node_outcome,
)


class FakeClock:
    """``sleep`` advances ``now``: a bounded wait runs in no real time."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class LaggingDns:
    """Fails ``failures`` times (as a headless Service's record before pod 0 is ready)."""

    def __init__(self, failures: int | None) -> None:
        self.failures, self.calls = failures, 0

    def __call__(self, host: str) -> object:
        self.calls += 1
        if self.failures is None or self.calls <= self.failures:
            raise socket.gaierror(-2, "Name or service not known")
        return [("addr",)]


def test_the_wait_retries_until_the_address_resolves() -> None:
    clock, dns, retries = FakeClock(), LaggingDns(failures=3), []
    attempts = wait_for_address(
        "job-0.svc", 120, resolve=dns, sleep=clock.sleep, clock=clock, on_retry=retries.append
    )
    assert attempts == 4 and dns.calls == 4
    assert len(retries) == 3 and "Name or service not known" in retries[0]
    assert clock.sleeps == [0.25, 0.5, 1.0]  # backing off, well inside the bound


def test_the_wait_is_bounded_and_names_the_address() -> None:
    clock, dns = FakeClock(), LaggingDns(failures=None)
    with pytest.raises(ResolveError) as err:
        wait_for_address("job-0.svc", 30, resolve=dns, sleep=clock.sleep, clock=clock)
    message = str(err.value)
    assert "'job-0.svc' did not resolve within 30 s" in message
    assert "Name or service not known" in message and "\n" not in message
    assert clock.now == pytest.approx(30)  # waited out the bound, not a moment more
    assert max(clock.sleeps) <= 5.0 and dns.calls > 5


def test_an_address_that_resolves_costs_no_wait() -> None:
    clock = FakeClock()
    assert wait_for_address("localhost", resolve=LaggingDns(0), sleep=clock.sleep) == 1
    assert clock.sleeps == []


class RecordingPopen:
    started: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, cmd: list[str], env: dict[str, str], **kw: Any) -> None:
        RecordingPopen.started.append({"cmd": cmd, "env": env, **kw})
        self.pid = 0

    def poll(self) -> int:
        return 0


def test_each_node_starts_its_global_ranks(tmp_path: Path, monkeypatch) -> None:
    RecordingPopen.started = []
    monkeypatch.setattr(node.subprocess, "Popen", RecordingPopen)
    agent = NodeAgent(tmp_path, 3, 1, 2, "node0", 29500, "gloo", 4)
    assert agent.ranks == [2, 3] and agent.world_size == 6
    agent.start()
    envs = [p["env"] for p in RecordingPopen.started]
    assert [(e["RANK"], e["LOCAL_RANK"]) for e in envs] == [("2", "0"), ("3", "1")]
    for e in envs:
        assert (e["WORLD_SIZE"], e["LOCAL_WORLD_SIZE"], e["GROUP_RANK"]) == ("6", "2", "1")
        assert (e["MASTER_ADDR"], e["MASTER_PORT"], e["MLBENCH_THREADS"]) == ("node0", "29500", "4")
    started = RecordingPopen.started
    assert all(p["start_new_session"] and p["preexec_fn"] is not None for p in started)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "rank-2.stderr",
        "rank-2.stdout",
        "rank-3.stderr",
        "rank-3.stdout",
    ]
    outcome = agent.poll()
    assert outcome is not None and outcome.state == "finished" and outcome.exit_codes == [0, 0]


def test_the_local_launcher_is_node_0_of_1(tmp_path: Path, monkeypatch) -> None:
    RecordingPopen.started = []
    monkeypatch.setattr(node.subprocess, "Popen", RecordingPopen)
    launcher = LocalLauncher(tmp_path, 3, "gloo", 1)
    assert (launcher.nnodes, launcher.node_rank, launcher.workers) == (1, 0, 3)
    launcher.start()
    envs = [p["env"] for p in RecordingPopen.started]
    assert [e["RANK"] for e in envs] == [e["LOCAL_RANK"] for e in envs] == ["0", "1", "2"]
    assert {e["WORLD_SIZE"] for e in envs} == {"3"}
    assert {e["MASTER_ADDR"] for e in envs} == {"127.0.0.1"}
    assert launcher.master_port > 0  # a free port, taken at start


@pytest.mark.parametrize(
    ("nnodes", "node_rank", "nproc", "port", "needle"),
    [
        (0, 0, 1, 29500, "--nnodes must be at least 1"),
        (2, 2, 1, 29500, "--node-rank 2 is outside 0..1"),
        (2, -1, 1, 29500, "--node-rank -1 is outside"),
        (2, 0, 0, 29500, "--nproc-per-node must be at least 1"),
        (2, 0, 1, 70000, "--master-port 70000 is not a TCP port"),
        (2, 0, 1, 0, "--master-port 0 is not a port every node can agree on"),
    ],
)
def test_an_impossible_layout_is_one_line(
    tmp_path: Path, nnodes: int, node_rank: int, nproc: int, port: int, needle: str
) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=needle):
        prepare_agent(NodeRequest(tmp_path, nnodes, node_rank, "m", port, nproc))


def test_a_run_dir_the_launcher_did_not_prepare_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        prepare_agent(NodeRequest(tmp_path / "nope", 2, 0, "m", 29500))
    with pytest.raises(ConfigError, match=r"config\.json not found"):
        prepare_agent(NodeRequest(tmp_path, 2, 0, "m", 29500))


def test_the_token_comes_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cret\n")
    assert read_token_file(tmp_path / "token") == "s3cret"
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        read_token_file(tmp_path / "empty")
    with pytest.raises(ConfigError, match=r"cannot read the upload token file .*missing"):
        read_token_file(tmp_path / "missing")


def _node(tmp_path: Path, rank: int, state: str, reason: str | None, code: int) -> None:
    agent = NodeAgent(tmp_path, 2, rank, 1, "m", 29500)
    write_node_outcome(tmp_path, agent, Outcome(state, reason, [code], 5.0 + rank))


def test_the_root_cause_wins_across_nodes(tmp_path: Path) -> None:
    _node(tmp_path, 0, "failed", "rank 0: DistBackendError: Connection closed by peer", 1)
    assert gather_outcome(tmp_path, 2) is None  # node 1 has not reported yet
    _node(tmp_path, 1, "failed", "rank 1: RuntimeError: injected failure", 1)
    outcome = gather_outcome(tmp_path, 2)
    assert outcome == Outcome("failed", "rank 1: RuntimeError: injected failure", [1, 1], 6.0)
    data = json.loads((tmp_path / "node-1.json").read_text())
    assert (data["ranks"], data["nnodes"], data["state"]) == ([1], 2, "failed")


def test_all_nodes_finished_is_a_finished_run(tmp_path: Path) -> None:
    _node(tmp_path, 0, "finished", None, 0)
    _node(tmp_path, 1, "finished", None, 0)
    assert gather_outcome(tmp_path, 2) == Outcome("finished", None, [0, 0], 6.0)


def test_a_stopped_node_makes_a_cancelled_run_not_its_peers_lost_connection(
    tmp_path: Path,
) -> None:
    _node(tmp_path, 0, "failed", "rank 0: DistBackendError: Connection closed by peer", 1)
    _node(tmp_path, 1, "cancelled", "interrupted by user (Ctrl-C)", -15)
    outcome = gather_outcome(tmp_path, 2)
    assert outcome is not None
    assert (outcome.state, outcome.reason) == ("cancelled", "interrupted by user (Ctrl-C)")
    _node(tmp_path, 0, "failed", "rank 0: RuntimeError: out of memory", 1)
    outcome = gather_outcome(tmp_path, 2)
    assert outcome is not None and outcome.state == "failed"  # a real error still wins
