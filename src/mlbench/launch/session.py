"""The launch session: everything around an engine, the same for the CLI and the master.

``preflight`` checks the whole request before anything exists (task, config, scheme options,
worker count, data — every line of it for LIBSVM —, backend, CPU cores) and raises
:class:`~mlbench.errors.ConfigError` (or ``DataError``) with one line; ``prepare`` creates the run
directory (config.json, run.json), or raises :class:`~mlbench.errors.RunDirError` naming the path
and the OS error, still before any worker exists; ``execute`` starts the engine's
:class:`~mlbench.launch.base.Launcher`, uploads events beside it when asked, waits, and writes the
final result.json — rank 0's, or one rebuilt from the event files when the run failed, so nothing
measured is lost — with ``upload`` saying whether every event reached the master (records it
refused are quarantined, not retried forever; docs/events.md). The master's scheduler runs
``mlbench run`` (this session) for each admitted run; a Slurm or Kubernetes engine plugs in as
another ``launcher_factory``.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlbench import runs
from mlbench.attempts import read_restarts
from mlbench.errors import ConfigError, ResumeError, RunDirError
from mlbench.faults import FAULTS_KEY, Fault, check_faults, parse_faults
from mlbench.launch.base import Launcher, Outcome, wait
from mlbench.launch.node import check_restarts
from mlbench.tasks.base import DataInfo, RunConfig, Task, TaskBase

#: the final upload drain's bound: the time an unreachable master may hold the launcher's exit
UPLOAD_DRAIN_SECONDS = 120.0


@dataclass
class LaunchRequest:
    task: str
    workers: int = 1
    backend: str = "auto"
    config_file: str | None = None
    overrides: list[str] = field(default_factory=list)
    threads_per_worker: int | None = None
    runs_dir: Path | None = None
    run_id: str | None = None
    upload: str | None = None
    upload_token: str | None = None
    oversubscribe: bool = False
    #: "local": the ranks run on this machine, so its GPUs and cores are checked; any other
    #: engine (slurm) runs them elsewhere and the checks of this machine would be wrong
    engine: str = "local"
    command: list[str] = field(default_factory=lambda: list(sys.argv))
    #: the run's place in a sweep (``{"id", "point", "repeat"}``), recorded in run.json so a
    #: report can group plain run directories (docs/reports.md#sweeps); None outside a sweep
    sweep: dict[str, Any] | None = None
    #: ``--network`` as written (``bandwidth=50mbit[,loss=0.01]``): local engine only, root only
    #: (docs/network.md); None: the ranks talk over loopback, unshaped
    network: str | None = None
    #: injected failures (``--fault SPEC``, docs/faults.md): recorded in run.json, never official
    faults: list[str] = field(default_factory=list)
    #: restarts of every rank after a failure (local engine only; 0: fail fast)
    max_restarts: int = 0
    #: extra environment for every rank (``MLBENCH_RESUME=1`` when a run is resumed)
    extra_env: dict[str, str] = field(default_factory=dict)


def cpu_cores() -> int:
    """The machine's CPU count, as the default threads per worker are computed from it."""
    return os.cpu_count() or 1


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def check_cores(
    workers: int, threads: int, cores: int, *, allow: bool, loader: int = 0
) -> str | None:
    """Refuse more torch threads in all than CPU cores, unless ``allow`` (``--oversubscribe``):
    then the warning to print. Oversubscribed workers time-slice the cores, so the step times a
    benchmark reports would measure the scheduler. The default threads per worker (cores //
    workers, at least 1) never exceed the cores while workers ≤ cores: what this catches is 64
    workers on 2 cores, or an explicit --threads-per-worker too large. ``loader``: the threads
    of each worker's input pipeline beside its own (the task's ``loader_threads``: 1b's
    decoding processes), which compete for the same cores.
    """
    total = workers * (threads + loader)
    if total <= cores:
        return None
    per = (
        f"({_count(threads, 'thread')} + {loader} loader)" if loader else _count(threads, "thread")
    )
    what = f"{_count(workers, 'worker')} × {per} = {total} threads on {_count(cores, 'CPU core')}"
    if not allow:
        raise ConfigError(
            f"{what} oversubscribes this machine; use fewer --workers or --threads-per-worker, "
            "or pass --oversubscribe to run anyway"
        )
    return f"warning: {what} (--oversubscribe): step times will not be representative"


def check_backend(requested: str, workers: int) -> None:
    """nccl needs one GPU per local worker; say so now rather than failing inside NCCL."""
    import torch

    from mlbench.dist import resolve_backend

    if requested == "mpi" and not torch.distributed.is_mpi_available():
        raise ConfigError("backend mpi is not built into this torch")
    if requested == "auto" and not torch.cuda.is_available():
        return
    if resolve_backend(requested) == "nccl" and workers > torch.cuda.device_count():
        raise ConfigError(
            f"{workers} workers is impossible with nccl here: it needs one GPU per worker and "
            f"{torch.cuda.device_count()} are visible (use --backend gloo to share)"
        )


def local_launcher(run_dir: Path, request: LaunchRequest, threads: int) -> Launcher:
    from mlbench.launch.local import LocalLauncher

    network = None
    if request.network:
        from mlbench.launch.network import Network, parse_spec, preflight

        network = Network(
            parse_spec(request.network),
            run_dir.name,
            request.workers,
            preflight(workers=request.workers),
        )
    return LocalLauncher(
        run_dir,
        request.workers,
        request.backend,
        threads,
        network=network,
        max_restarts=request.max_restarts,
        extra_env=request.extra_env,
    )


def check_network(request: LaunchRequest) -> None:
    """``--network``: parsed and this host checked (root, ``ip``, ``tc``) before anything
    exists; refused for engines whose ranks are not local processes."""
    if not request.network:
        return
    from mlbench.launch.network import NetworkError, parse_spec, preflight

    if request.engine != "local":
        raise NetworkError(f"--network shapes local ranks only; not with --engine {request.engine}")
    parse_spec(request.network)
    if request.workers < 2:
        raise NetworkError("--network needs at least 2 workers: one rank sends nothing to shape")
    preflight(workers=request.workers)


def outage_transport(faults: list[Fault]) -> Any:
    """The uploader's transport under a ``master-down`` fault (None: the default)."""
    down = [f for f in faults if f.kind == "master-down"]
    if not down:
        return None
    from mlbench.launch.outage import OutageTransport

    after, duration = down[0].after, down[0].duration
    assert after is not None and duration is not None
    return OutageTransport(after, duration)


def _os_error(exc: OSError) -> str:
    """``Not a directory: '/x/runs'``: the OS's words and the path it was about, on one line."""
    text = exc.strerror or str(exc)
    return f"{text}: {exc.filename!r}" if exc.filename else text


class LaunchSession:
    def __init__(
        self,
        request: LaunchRequest,
        launcher_factory: Callable[[Path, LaunchRequest, int], Launcher] = local_launcher,
    ) -> None:
        self.request = request
        self.launcher_factory = launcher_factory
        self.task: TaskBase | None = None
        self.cfg: RunConfig | None = None
        self.info: DataInfo | None = None
        self.run_dir: Path | None = None
        self.threads = 1
        self.launch_info: dict[str, Any] = {}
        #: one-line warnings for the user (printed by the CLI): the request runs, but see this
        self.warnings: list[str] = []
        # how the event upload ended (``UploadStatus``), when the run uploads; into result.json
        self.upload: dict[str, Any] | None = None
        self.faults: list[Fault] = []

    # ------------------------------------------------------------------ before anything exists
    def preflight(self) -> tuple[TaskBase, RunConfig]:
        r = self.request
        if r.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {r.workers}")
        if r.threads_per_worker is not None and r.threads_per_worker < 1:
            raise ConfigError("--threads-per-worker must be at least 1")
        self.faults = parse_faults(r.faults)
        check_faults(self.faults, r.workers, upload=bool(r.upload), engine=r.engine)
        if r.max_restarts and r.engine != "local":
            raise ConfigError(
                f"--max-restarts is supported by the local engine only (not --engine {r.engine})"
            )
        check_restarts(r.max_restarts, 1)
        task, cfg = runs.resolve_config(r.task, config_file=r.config_file, overrides=r.overrides)
        if cfg.data.dir and not Path(cfg.data.dir).expanduser().is_dir():
            raise ConfigError(f"data directory {cfg.data.dir} does not exist")
        runs.validate_run(task, cfg, r.workers)
        info = task.prepare_data(cfg)
        per_rank = info.train_size // r.workers
        if isinstance(task, Task) and per_rank < (
            need := cfg.data.batch_size * task.accumulation(cfg, r.workers)
        ):
            raise ConfigError(
                f"{r.workers} workers is impossible here: each would get {per_rank} of "
                f"{info.train_size} training samples, less than one step ({need} samples)"
            )
        check_network(r)
        if r.engine == "local":
            check_backend(r.backend, r.workers)
            cores = cpu_cores()
            from mlbench.dist import trains_on_gpu

            loader = task.loader_threads(cfg, on_gpu=trains_on_gpu(r.backend))
            threads = r.threads_per_worker or max(1, cores // r.workers - loader)
            warning = check_cores(r.workers, threads, cores, allow=r.oversubscribe, loader=loader)
        else:  # 0: each node's agent decides from its own cores
            threads, warning = r.threads_per_worker or 0, None
        self.task, self.cfg, self.info = task, cfg, info
        self.threads = threads
        self.warnings = [warning] if warning else []
        return task, cfg

    def prepare(self) -> Path:
        """The run directory with config.json and run.json (the launch request)."""
        assert self.task is not None and self.cfg is not None and self.info is not None
        r = self.request
        runs_dir = r.runs_dir.expanduser() if r.runs_dir else runs.default_runs_dir()
        run_dir = None
        try:
            run_dir = runs.create_run_dir(runs_dir, self.task.name, r.run_id)
            self._write_run_files(run_dir)
        except OSError as exc:
            if run_dir is not None:  # half made: leave nothing behind that looks like a run
                shutil.rmtree(run_dir, ignore_errors=True)
            raise RunDirError(
                f"cannot write the run directory under {runs_dir}: {_os_error(exc)}"
            ) from None
        self.run_dir = run_dir
        return run_dir

    def _write_run_files(self, run_dir: Path) -> None:
        assert self.cfg is not None and self.info is not None
        r = self.request
        runs.write_config(run_dir, self.cfg)
        self.launch_info = {
            "task_ref": r.task,  # how the workers find the task again (name or module:Class)
            "workers": r.workers,
            "backend_requested": r.backend,
            "threads_per_worker": self.threads,
            "engine": r.engine,
            "command": r.command,
            "data": self.info.description,
            "official_data_issues": list(self.info.issues),
            "created": time.time(),
        }
        if r.sweep is not None:
            self.launch_info["sweep"] = dict(r.sweep)
        if r.network:
            self.launch_info["network"] = r.network
        if self.faults:
            self.launch_info[FAULTS_KEY] = [f.to_dict() for f in self.faults]
        if r.max_restarts:
            self.launch_info["max_restarts"] = r.max_restarts
        runs.write_launch(run_dir, self.launch_info)

    # ------------------------------------------------------------------ the run
    def execute(
        self,
        on_tick: Callable[[], None] | None = None,
        on_upload_incomplete: Callable[[str], None] | None = None,
    ) -> tuple[dict[str, Any], Outcome]:
        """Start the engine, wait for it (Ctrl-C/SIGTERM → cancelled), write result.json."""
        assert self.run_dir is not None
        r, run_dir = self.request, self.run_dir
        launcher = self.launcher_factory(run_dir, r, self.threads)
        uploader = outage = None
        if r.upload:
            from mlbench.telemetry.uploader import Uploader

            outage = outage_transport(self.faults)
            uploader = Uploader(
                run_dir, run_dir.name, r.upload, r.workers, token=r.upload_token, transport=outage
            )
            uploader.start()
        try:
            launcher.start()
            outcome = wait(launcher, on_tick)
        finally:
            if uploader is not None:
                self.upload = self._end_upload(uploader)
                if outage is not None:  # the fault's proof that it cut something
                    self.upload["refused_by_fault"] = outage.refused
                if not self.upload["complete"] and on_upload_incomplete is not None:
                    on_upload_incomplete(str(self.upload["reason"]))
        return self.finalize(outcome), outcome

    def _end_upload(self, uploader: Any) -> dict[str, Any]:
        """Drain the uploader and tell the master how it ended (bounded, see
        :func:`~mlbench.telemetry.uploader.drain_and_report`).

        The status also goes into result.json (``finalize``), which is what the master's
        scheduler reads when the launcher exits: it learns it even if this report is lost."""
        from mlbench.telemetry.uploader import drain_and_report

        return drain_and_report(uploader, UPLOAD_DRAIN_SECONDS)

    def finalize(self, outcome: Outcome) -> dict[str, Any]:
        """Rank 0's result.json plus the engine's facts; on failure, rebuilt from the events."""
        from mlbench.results.from_events import ranks_from_events
        from mlbench.results.summary import RESULT_FILE, load_result, write_result

        assert self.run_dir is not None and self.task is not None and self.cfg is not None
        run_dir = self.run_dir
        launcher_facts = {
            "wall_time_total": outcome.wall_time,
            "exit_codes": outcome.exit_codes,
            "threads_per_worker": self.threads,
            "command": self.launch_info.get("command"),
        }
        if self.request.max_restarts:
            launcher_facts["max_restarts"] = self.request.max_restarts
            launcher_facts["engine_restarts"] = sum(
                1 for x in read_restarts(run_dir) if x.by == "engine"
            )
        if outcome.state == "finished" and (run_dir / RESULT_FILE).exists():
            result = load_result(run_dir)
        else:
            if outcome.state == "finished":  # all exited 0, but rank 0 wrote nothing: a failure
                outcome.state, outcome.reason = (
                    "failed",
                    "workers exited without writing result.json",
                )
            result = runs.make_result(
                run_dir,
                self.task,
                self.cfg,
                state=outcome.state,
                reason=outcome.reason,
                world_size=self.request.workers,
                backend=None,
                ranks=ranks_from_events(run_dir, self.request.workers),
            )
        result["launcher"] = launcher_facts
        if self.upload is not None:
            result["upload"] = self.upload
        if self.request.network:
            from mlbench.launch.netprobe import read_probe
            from mlbench.launch.network import parse_spec, record

            result["network"] = record(parse_spec(self.request.network), read_probe(run_dir))
        write_result(run_dir, result)
        return result


def resume_session(run_dir: Path, *, command: list[str] | None = None) -> LaunchSession:
    """The session that continues a stopped, failed or cancelled run in place (``mlbench run
    --resume``): its config.json and launch request (run.json) as they were, a ``Restart`` by
    the user appended to ``attempts.jsonl``, and ``MLBENCH_RESUME=1`` for every rank, which
    continue from the run's latest complete checkpoint (docs/checkpoints.md).

    Refused with one line (:class:`~mlbench.errors.ResumeError`): not a directory, no config,
    a run that finished, or one another engine ran (its ranks are not this machine's to start).
    """
    from mlbench.attempts import RESUME_ENV, record_restart
    from mlbench.results.summary import RESULT_FILE

    run_dir = Path(run_dir).expanduser().resolve()
    if not run_dir.is_dir():
        raise ResumeError(f"{run_dir} is not a run directory")
    if not (run_dir / runs.CONFIG_FILE).is_file():
        raise ResumeError(f"{run_dir} has no {runs.CONFIG_FILE}: nothing to resume")
    launch = runs.read_launch(run_dir)
    state = _previous_state(run_dir / RESULT_FILE)
    if state == "finished":
        raise ResumeError(f"run {run_dir.name} already finished; there is nothing to resume")
    if "workers" not in launch:
        raise ResumeError(
            f"{run_dir} has no launch record ({runs.LAUNCH_FILE}): it was not started by "
            "`mlbench run`; start its ranks again yourself with MLBENCH_RESUME=1"
        )
    engine = launch.get("engine", "local")
    if engine != "local":
        raise ResumeError(f"run {run_dir.name} ran on engine {engine!r}; only local runs resume")
    task, cfg = runs.load_run_config(run_dir)
    session = LaunchSession(
        LaunchRequest(
            task=str(launch.get("task_ref") or cfg.task),
            workers=int(launch.get("workers", 1)),
            backend=str(launch.get("backend_requested", "auto")),
            threads_per_worker=launch.get("threads_per_worker"),
            runs_dir=run_dir.parent,
            run_id=run_dir.name,
            engine="local",
            command=command if command is not None else list(sys.argv),
            extra_env={RESUME_ENV: "1"},
            # the run's network and restart budget as launched; its faults fired in the first
            # attempt only (docs/faults.md), so they are recorded, not re-armed
            network=launch.get("network"),
            max_restarts=int(launch.get("max_restarts", 0)),
        )
    )
    session.task, session.cfg, session.run_dir = task, cfg, run_dir
    session.threads = int(launch.get("threads_per_worker") or 1)
    session.launch_info = dict(launch, command=session.request.command)
    record_restart(run_dir, "resumed by user", failed_at=_ended_at(run_dir), by="user")
    return session


def _previous_state(path: Path) -> str | None:
    import json

    try:
        return str(json.loads(path.read_text()).get("state"))
    except (FileNotFoundError, ValueError):
        return None  # the launcher itself died: no result, the run did not finish


def _ended_at(run_dir: Path) -> float:
    """When the previous attempt ended: its last event on any rank (the last sign of work),
    else result.json's time, else now."""
    from mlbench.telemetry.events import read_events

    last = [
        records[-1]["time"]
        for path in sorted(run_dir.glob("rank-*.jsonl"))
        if (records := read_events(path))
    ]
    if last:
        return float(max(last))
    result = run_dir / "result.json"
    return result.stat().st_mtime if result.exists() else time.time()
