"""The per-node agent (``mlbench node``): this node's K ranks of an N-node run.

Every engine starts the same agent once per node (DESIGN §2): the local engine is the agent with
N = 1 (:class:`~mlbench.launch.local.LocalLauncher`), Slurm runs it under ``srun`` once per node,
Kubernetes once per pod of an Indexed Job. The agent starts the worker entry
(:mod:`mlbench.launch.worker`) for global ranks ``R·K … R·K+K-1`` with env:// rendezvous
(``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE = N·K``, ``MASTER_ADDR``/``MASTER_PORT``) on a run
directory the launcher already prepared (config.json), and keeps the local failure contract:

* if any of its ranks exits non-zero or is killed, it stops all its other ranks within seconds
  (SIGTERM, then SIGKILL after a grace period) and reports the failing rank's reason — its
  ``MLBENCH-ERROR:`` line, preferring a real error over a peer's lost-connection error. Ranks on
  other nodes see the broken collective and fail in turn, so every node's agent ends;
* ranks run in their own session (a terminal Ctrl-C reaches only the agent, which stops them in
  order) and get SIGKILL from the kernel if the agent dies (PR_SET_PDEATHSIG): no orphans;
* each rank's stdout/stderr go to ``rank-<global rank>.stdout`` / ``.stderr`` in the run
  directory, so the files of every node sit side by side on a shared filesystem;
* a rank whose step count has not moved for ``train.hang_timeout`` seconds of training is a
  failure too (the hang watchdog, :mod:`mlbench.launch.watchdog`, on the ranks' heartbeats);
* with ``max_restarts`` (``--max-restarts``, one node only) a failure stops every rank, appends
  the root cause to ``attempts.jsonl`` and starts every rank again with ``MLBENCH_RESUME=1`` on
  a fresh port, until the run ends or the restarts are spent (docs/faults.md).

The ``mlbench node`` command around it (:func:`run_node`) also waits, bounded, for the master
address to resolve (a headless Service's DNS record appears some seconds after its pod), uploads
its own ranks' events to the master, and writes ``node-<R>.json`` — its outcome — so an engine
that sees the whole run can pick the root cause across nodes (:func:`gather_outcome`).

Who writes ``result.json``: rank 0 when the run finishes (as under every engine); otherwise the
launcher that prepared the run (``LaunchSession.finalize``: rebuilt from the event files, the
reason from :func:`gather_outcome`). The agent itself never writes it: no single node sees every
node's outcome.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from mlbench.attempts import RESUME_ENV, record_restart
from mlbench.errors import ConfigError, MlbenchError
from mlbench.launch.base import Outcome, wait
from mlbench.launch.watchdog import Watchdog, hang_timeout_of
from mlbench.launch.worker import ERROR_MARKER
from mlbench.telemetry.heartbeat import read_heartbeat

GRACE_SECONDS = 3.0
#: the default bound on waiting for the master address to resolve (``--resolve-timeout``)
RESOLVE_TIMEOUT = 120.0
#: the final upload drain's bound: the time an unreachable master may hold the agent's exit
UPLOAD_DRAIN_SECONDS = 120.0
NODE_FILE = "node-{}.json"
# fragments of the errors a rank sees when a *peer* vanished mid-collective
_PEER_LOSS = (
    "DistBackendError",
    "Connection closed",
    "Connection reset",
    "Broken pipe",
    "connection",
    "gloo",
    "Gloo",
    "NCCL",
)


class ResolveError(MlbenchError):
    """The master address did not resolve within the agent's bound (a wrong name, or DNS that
    never caught up): said in one line naming the address, instead of every rank timing out in
    the rendezvous with a message about a TCP store."""


#: what a user's Ctrl-C or an engine's stop sends: held back while ranks are forked
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@contextlib.contextmanager
def _stop_signals_held() -> Iterator[None]:
    """Hold Ctrl-C/SIGTERM back while ranks are forked, and act on them after.

    Why: Python runs at-fork hooks in the parent (logging's lock release) where an exception —
    the KeyboardInterrupt a Ctrl-C becomes — is printed and dropped: a Ctrl-C that landed
    there, e.g. during a restart's spawn, was lost and the run went on. Blocking the signal in
    this thread is not enough (the kernel hands it to any thread, the uploader's, and Python
    then interrupts the main thread anyway), so the Python-level handlers are swapped for one
    that only notes the signal; the previous handler runs once every rank of the attempt is
    started, so :meth:`NodeAgent.stop` sees them all. Main thread only (where handlers live).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {
        s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in _STOP_SIGNALS
    }
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if caught:
            handler = previous[signal.Signals(caught[0])]
            if callable(handler):
                handler(caught[0], None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(caught[0])


def is_peer_loss(reason: str) -> bool:
    """Whether ``reason`` reads like the error a rank sees when a *peer* died (not a cause)."""
    return any(s in reason for s in _PEER_LOSS)


@dataclass
class NodeAgent:
    """This node's ranks of an ``nnodes × nproc_per_node`` run: a :class:`Launcher`."""

    run_dir: Path
    nnodes: int
    node_rank: int
    nproc_per_node: int
    master_addr: str
    master_port: int
    backend: str = "auto"
    threads_per_worker: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)
    #: restarts of all ranks after a failure (``--max-restarts``; one node only)
    max_restarts: int = 0
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list, init=False)
    _files: list[IO[bytes]] = field(default_factory=list, init=False)
    _started: float = field(default=0.0, init=False)
    _stderr_from: dict[int, int] = field(default_factory=dict, init=False)
    _watchdog: Watchdog | None = field(default=None, init=False)
    #: engine restarts done so far in this agent's life
    restarts: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        check_topology(self.nnodes, self.node_rank, self.nproc_per_node, self.master_port)
        check_restarts(self.max_restarts, self.nnodes)

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node

    @property
    def ranks(self) -> list[int]:
        """The global ranks this node runs."""
        return list(ranks_of(self.node_rank, self.nproc_per_node))

    def start(self) -> None:
        self._started = time.perf_counter()
        timeout = hang_timeout_of(self.run_dir)
        self._watchdog = Watchdog(self.run_dir, timeout) if timeout else None
        self._spawn()

    def _spawn(self) -> None:
        """Start every rank of this node (an attempt: the first, or one after a restart)."""
        with _stop_signals_held():
            self._spawn_ranks()

    def _spawn_ranks(self) -> None:
        for local, rank in enumerate(self.ranks):
            env = dict(os.environ)
            env.update(
                RANK=str(rank),
                LOCAL_RANK=str(local),
                WORLD_SIZE=str(self.world_size),
                LOCAL_WORLD_SIZE=str(self.nproc_per_node),
                GROUP_RANK=str(self.node_rank),  # torchrun's name for the node's index
                MASTER_ADDR=self.master_addr,
                MASTER_PORT=str(self.master_port),
                OMP_NUM_THREADS=str(self.threads_per_worker),
                MLBENCH_THREADS=str(self.threads_per_worker),
                PYTHONUNBUFFERED="1",
            )
            env.update(self.extra_env)
            out = open(self.run_dir / f"rank-{rank}.stdout", "ab")  # noqa: SIM115
            err = open(self.run_dir / f"rank-{rank}.stderr", "ab")  # noqa: SIM115
            # this attempt's reason is in what it writes, not in an earlier attempt's lines
            self._stderr_from[rank] = err.seek(0, os.SEEK_END)
            self._files += [out, err]
            cmd = [
                sys.executable,
                "-m",
                "mlbench.launch.worker",
                "--run-dir",
                str(self.run_dir),
                "--backend",
                self.backend,
            ]
            self.procs.append(
                subprocess.Popen(
                    self.rank_prefix(rank) + cmd,
                    env=env,
                    stdout=out,
                    stderr=err,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                )
            )

    def rank_prefix(self, rank: int) -> list[str]:
        """What rank ``rank``'s command starts with (the local engine's ``--network`` puts
        ``ip netns exec NS`` here); the prefix must exec the worker in place, keeping the pid,
        process group and parent-death signal this agent relies on."""
        return []

    def _reason(self, rank: int, code: int) -> str:
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            what = f"rank {rank} was killed by {name}"
        else:
            what = f"rank {rank} exited with code {code}"
        tail = _stderr_tail(self.run_dir / f"rank-{rank}.stderr", self._stderr_from.get(rank, 0))
        marker = [ln for ln in tail if ln.startswith(ERROR_MARKER)]
        if marker:
            return marker[-1][len(ERROR_MARKER) :].strip()
        lines = [ln for ln in tail if ln.strip()]
        return f"{what}: {lines[-1].strip()}" if lines else what

    def _root_cause(self) -> str:
        """The failing rank's reason, preferring a real error over peers' lost-connection errors.

        When one rank dies, its peers fail inside a collective moments later; the rank whose exit
        we happen to notice first need not be the cause. Wait briefly for the others, then prefer a
        rank whose error is not a communication error.
        """
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and any(p.poll() is None for p in self.procs):
            time.sleep(0.05)
        reasons = [
            self._reason(rank, code)
            for rank, code in zip(self.ranks, (p.poll() for p in self.procs), strict=True)
            if code not in (None, 0)
        ]
        primary = [r for r in reasons if not is_peer_loss(r)]
        return (primary or reasons)[0]

    def terminate(self, grace: float = GRACE_SECONDS) -> None:
        """SIGTERM every live worker, SIGKILL what is left after ``grace`` seconds."""
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in self.procs:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                p.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    def poll(self) -> Outcome | None:
        """None while ranks run; the outcome once all exited 0, or the first failure (then every
        other rank is stopped, and the reason is the root cause's). A rank that exits non-zero
        or stops progressing (the hang watchdog) is a failure; with restarts left, every rank is
        started again instead (:meth:`_restart`) and the run goes on."""
        codes = [p.poll() for p in self.procs]
        if any(c not in (None, 0) for c in codes):
            failed_at = time.time()
            reason = self._root_cause()
            self.terminate()
            return self._failed(reason, failed_at)
        if all(c == 0 for c in codes):
            return self._outcome("finished", None)
        if self._watchdog is not None:
            live = [p.pid if c is None else None for p, c in zip(self.procs, codes, strict=True)]
            hang = self._watchdog.check(self.ranks, live)
            if hang is not None:
                failed_at = time.time()
                self.terminate()
                return self._failed(hang, failed_at)
        return None

    def _failed(self, reason: str, failed_at: float) -> Outcome | None:
        """The failed outcome, or None after restarting every rank when restarts are left."""
        if self.restarts >= self.max_restarts:
            if self.restarts:
                reason = (
                    f"{reason} (after {self.restarts} restart(s), --max-restarts "
                    f"{self.max_restarts} spent; every attempt's reason in attempts.jsonl)"
                )
            return self._outcome("failed", reason)
        self._restart(reason, failed_at)
        return None

    def _restart(self, reason: str, failed_at: float) -> None:
        """Record the restart (``attempts.jsonl``, read by the next attempt's loop) and start
        every rank again, told to resume (``MLBENCH_RESUME=1``) on a fresh rendezvous port."""
        for fh in self._files:
            fh.close()
        self._files, self.procs = [], []
        self.restarts += 1
        record_restart(
            self.run_dir,
            reason=reason,
            failed_at=failed_at,
            by="engine",
            steps_at_failure=self._steps_done(),
        )
        self.extra_env[RESUME_ENV] = "1"
        self.master_port = self._restart_port()
        self._spawn()

    def _steps_done(self) -> dict[str, int]:
        """Each rank's steps done as its last heartbeat said (read before the next attempt's
        ranks overwrite them): the lost work past the last logged window. A lower bound — a
        beat is at most a second old."""
        out: dict[str, int] = {}
        for rank in self.ranks:
            beat = read_heartbeat(self.run_dir, rank)
            if beat is not None and isinstance(beat.get("step"), int):
                out[str(rank)] = int(beat["step"])
        return out

    def _restart_port(self) -> int:
        """The next attempt's rendezvous port (the local engine takes a fresh free one)."""
        return self.master_port

    def stop(self, reason: str = "interrupted by user (Ctrl-C)") -> Outcome:
        self.terminate()
        return self._outcome("cancelled", reason)

    def logs(self, rank: int) -> tuple[Path, Path]:
        return self.run_dir / f"rank-{rank}.stdout", self.run_dir / f"rank-{rank}.stderr"

    def wait(self, on_tick: Callable[[], None] | None = None) -> Outcome:
        """Watch the workers until all exit; stop everyone on the first failure or Ctrl-C."""
        return wait(self, on_tick)

    def _outcome(self, state: str, reason: str | None) -> Outcome:
        for fh in self._files:
            fh.close()
        return Outcome(
            state, reason, [p.poll() for p in self.procs], time.perf_counter() - self._started
        )


def check_restarts(max_restarts: int, nnodes: int) -> None:
    """Restarts are the local engine's (one node): an agent on one node of many cannot restart
    the other nodes' ranks, and Slurm and Kubernetes restarts are not built."""
    if max_restarts < 0:
        raise ConfigError(f"--max-restarts must be at least 0, got {max_restarts}")
    if max_restarts and nnodes > 1:
        raise ConfigError(
            "--max-restarts is supported by the local engine only (one node); multi-node, "
            "Slurm and Kubernetes runs fail fast"
        )


def check_topology(nnodes: int, node_rank: int, nproc_per_node: int, master_port: int) -> None:
    """One line for an impossible layout, before anything starts."""
    if nnodes < 1:
        raise ConfigError(f"--nnodes must be at least 1, got {nnodes}")
    if not 0 <= node_rank < nnodes:
        raise ConfigError(f"--node-rank {node_rank} is outside 0..{nnodes - 1} (--nnodes {nnodes})")
    if nproc_per_node < 1:
        raise ConfigError(f"--nproc-per-node must be at least 1, got {nproc_per_node}")
    if not 0 <= master_port <= 65535:  # 0: the local engine picks a free port at start
        raise ConfigError(f"--master-port {master_port} is not a TCP port")


Resolver = Callable[[str], object]


def _getaddrinfo(host: str) -> object:
    return socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)


def wait_for_address(
    host: str,
    timeout: float = RESOLVE_TIMEOUT,
    *,
    resolve: Resolver = _getaddrinfo,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    on_retry: Callable[[str], None] | None = None,
) -> int:
    """Retry resolving ``host`` until it resolves or ``timeout`` seconds have passed.

    Why: on Kubernetes a headless Service's record for pod 0 appears only after that pod is
    ready, seconds after the other pods started; a rank that tried once would die with a TCP
    store error that says nothing about DNS. Returns the attempts it took; raises
    :class:`ResolveError` naming the address and the last resolver error.
    """
    deadline = clock() + timeout
    delay, attempts = 0.25, 0
    while True:
        attempts += 1
        try:
            resolve(host)
            return attempts
        except (OSError, UnicodeError) as exc:  # socket.gaierror is an OSError
            last = str(exc) or type(exc).__name__
        left = deadline - clock()
        if left <= 0:
            raise ResolveError(
                f"master address {host!r} did not resolve within {timeout:g} s "
                f"({attempts} attempts; last error: {last})"
            )
        if on_retry is not None:
            on_retry(last)
        sleep(min(delay, left))
        delay = min(delay * 2, 5.0)


# ---------------------------------------------------------------------- the node's outcome file
def write_node_outcome(
    run_dir: Path, agent: NodeAgent, outcome: Outcome, upload: dict[str, Any] | None = None
) -> Path:
    """``node-<R>.json``: what this agent saw, for the engine that combines the nodes."""
    path = run_dir / NODE_FILE.format(agent.node_rank)
    data = {
        "node_rank": agent.node_rank,
        "nnodes": agent.nnodes,
        "host": socket.gethostname(),
        "ranks": agent.ranks,
        "state": outcome.state,
        "reason": outcome.reason,
        "exit_codes": outcome.exit_codes,
        "wall_time": outcome.wall_time,
        "upload": upload,
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)
    return path


def gather_outcome(run_dir: Path, nnodes: int) -> Outcome | None:
    """The run's outcome from every node's ``node-<R>.json``; None until all nodes wrote one.

    A node that failed with a real error makes the run failed with that reason; otherwise a
    stopped node (``scancel``, a deleted pod) makes it cancelled — its peers then fail only with
    lost connections, which are not a cause —; otherwise a failed node's reason stands.
    Exit codes in global rank order, the wall time the slowest node's."""
    nodes = []
    for r in range(nnodes):
        try:
            nodes.append(json.loads((run_dir / NODE_FILE.format(r)).read_text()))
        except (OSError, ValueError):
            return None
    codes: list[int | None] = [c for n in nodes for c in n["exit_codes"]]
    wall = max(float(n["wall_time"]) for n in nodes)
    failed = [str(n["reason"]) for n in nodes if n["state"] == "failed"]
    cancelled = [str(n["reason"]) for n in nodes if n["state"] == "cancelled"]
    primary = [r for r in failed if not is_peer_loss(r)]
    if primary:
        return Outcome("failed", primary[0], codes, wall)
    if cancelled:
        return Outcome("cancelled", cancelled[0], codes, wall)
    if failed:
        return Outcome("failed", failed[0], codes, wall)
    return Outcome("finished", None, codes, wall)


# ---------------------------------------------------------------------- the `mlbench node` life
@dataclass
class NodeRequest:
    run_dir: Path
    nnodes: int
    node_rank: int
    master_addr: str
    master_port: int
    nproc_per_node: int = 1
    backend: str = "auto"
    threads_per_worker: int | None = None
    upload: str | None = None
    upload_token: str | None = None
    resolve_timeout: float = RESOLVE_TIMEOUT


def read_token_file(path: Path) -> str:
    """The upload token from a file (a mounted Secret): never on a command line, where every
    user of the node can read it in ``ps``."""
    try:
        token = Path(path).expanduser().read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the upload token file {path}: {exc.strerror}") from None
    if not token:
        raise ConfigError(f"the upload token file {path} is empty")
    return token


def prepare_agent(request: NodeRequest) -> NodeAgent:
    """Check the request (layout, run directory) and build the agent; nothing starts yet."""
    r = request
    check_topology(r.nnodes, r.node_rank, r.nproc_per_node, r.master_port)
    if r.master_port == 0:
        raise ConfigError("--master-port 0 is not a port every node can agree on")
    if r.resolve_timeout < 0:
        raise ConfigError(f"--resolve-timeout must be at least 0, got {r.resolve_timeout:g}")
    run_dir = Path(r.run_dir).expanduser().resolve()
    if not run_dir.is_dir():
        raise ConfigError(f"run directory {run_dir} does not exist (the launcher prepares it)")
    if not (run_dir / "config.json").is_file():
        raise ConfigError(f"{run_dir / 'config.json'} not found: the launcher prepares the run")
    cores = os.cpu_count() or 1
    threads = r.threads_per_worker or max(1, cores // r.nproc_per_node)
    if threads < 1:
        raise ConfigError("--threads-per-worker must be at least 1")
    return NodeAgent(
        run_dir,
        r.nnodes,
        r.node_rank,
        r.nproc_per_node,
        r.master_addr,
        r.master_port,
        r.backend,
        threads,
    )


def run_node(
    request: NodeRequest,
    *,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
    resolve: Resolver = _getaddrinfo,
) -> tuple[Outcome, dict[str, Any] | None]:
    """The agent's whole life: resolve the master, upload beside the ranks, wait, write
    ``node-<R>.json``. Ctrl-C/SIGTERM (turned into KeyboardInterrupt by the CLI) stops the
    ranks: cancelled. Raises :class:`ResolveError`/``ConfigError`` before any rank starts."""
    agent = prepare_agent(request)
    r = request
    if r.nnodes > 1:
        wait_for_address(
            r.master_addr,
            r.resolve_timeout,
            resolve=resolve,
            on_retry=lambda err: log(f"waiting for {r.master_addr} to resolve ({err})"),
        )
    log(
        f"node {r.node_rank}/{r.nnodes}: ranks {agent.ranks[0]}..{agent.ranks[-1]} of "
        f"{agent.world_size} × {agent.threads_per_worker} thread(s), master "
        f"{r.master_addr}:{r.master_port} → {agent.run_dir}"
    )
    uploader = None
    if r.upload:
        from mlbench.telemetry.uploader import Uploader

        uploader = Uploader(
            agent.run_dir,
            agent.run_dir.name,
            r.upload,
            agent.world_size,
            token=r.upload_token,
            ranks=agent.ranks,
        )
        uploader.start()
    upload = None
    try:
        agent.start()
        outcome = agent.wait()
    finally:
        if uploader is not None:
            from mlbench.telemetry.uploader import drain_and_report

            upload = drain_and_report(uploader, UPLOAD_DRAIN_SECONDS)
            if not upload["complete"]:
                log(f"events not fully uploaded: {upload['reason']}")
    write_node_outcome(agent.run_dir, agent, outcome, upload)
    return outcome, upload


def _stderr_tail(path: Path, start: int = 0, max_bytes: int = 8192) -> list[str]:
    """The last lines of ``path`` written after byte ``start``."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(start, size - max_bytes))
            return fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return []


def ranks_of(node_rank: int, nproc_per_node: int) -> Sequence[int]:
    """The global ranks of node ``node_rank`` (for engines naming a node's files)."""
    return range(node_rank * nproc_per_node, (node_rank + 1) * nproc_per_node)
