"""The worker entry point: one process per rank.

Started by ``mlbench run`` (our local launcher) or by plain torchrun::

    torchrun --nproc-per-node 2 -m mlbench.launch.worker --run-dir RUN --task epsilon-logreg \
        --set data.dir=DATA --set data.dataset=a9a

Either way the rendezvous is env:// (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT). With ``--task``
each rank resolves the same config from the same arguments and rank 0 records it; without, the
config is read from ``RUN/config.json`` (what the local launcher writes). Rank 0 writes
``result.json`` when training ends.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

ERROR_MARKER = "MLBENCH-ERROR:"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="mlbench worker", description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", required=True, type=Path, help="run directory (created if needed)")
    p.add_argument("--task", help="task name (else read RUN/config.json)")
    p.add_argument("--config", help="TOML/JSON config file (with --task)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--backend", default=os.environ.get("MLBENCH_BACKEND", "auto"))
    p.add_argument("--threads", type=int, default=None, help="torch threads for this rank")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    rank = int(os.environ.get("RANK", "0"))
    try:
        return _run(args, rank)
    except BaseException as exc:  # report every failure in one parseable line, then re-raise
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            raise
        traceback.print_exc()
        message = str(exc).splitlines()[0] if str(exc) else ""
        print(f"{ERROR_MARKER} rank {rank}: {type(exc).__name__}: {message}", file=sys.stderr)
        sys.stderr.flush()
        return 1


def _run(args: argparse.Namespace, rank: int) -> int:
    import torch

    from mlbench import runs
    from mlbench.dist import init_from_env, shutdown
    from mlbench.faults import faults_from_launch
    from mlbench.registry import get_algorithm
    from mlbench.results.summary import write_result
    from mlbench.tasks.base import MeasurementTask, Task
    from mlbench.telemetry.events import EventWriter, events_path
    from mlbench.telemetry.heartbeat import Heartbeat, heartbeat_interval
    from mlbench.telemetry.resources import ResourceSampler
    from mlbench.train.faults import injector_for
    from mlbench.train.loop import LoopPosition, train

    run_dir: Path = args.run_dir
    if args.task:
        run_dir.mkdir(parents=True, exist_ok=True)
        task, cfg = runs.resolve_config(
            args.task, config_file=args.config, overrides=args.overrides
        )
        if rank == 0 and not (run_dir / runs.CONFIG_FILE).exists():
            runs.write_config(run_dir, cfg)
    else:
        task, cfg = runs.load_run_config(run_dir)
    threads = args.threads or int(os.environ.get("MLBENCH_THREADS", "0"))
    if threads > 0:
        torch.set_num_threads(threads)
    dist = init_from_env(args.backend)
    if probe_bps := float(os.environ.get("MLBENCH_NETWORK_PROBE", "0") or 0):
        from mlbench.launch.netprobe import run_probe  # --network: measure the links first

        run_probe(dist, run_dir, probe_bps)
    run_id = run_dir.name
    events = EventWriter(events_path(run_dir, dist.rank), run_id, dist.rank)
    try:
        position = LoopPosition()
        sampler = ResourceSampler(
            events,
            cfg.train.resource_every_seconds,
            position=position,
            cuda_index=_cuda_index(dist.device),
        )
        sampler.start()
        heartbeat = None
        if cfg.train.hang_timeout:  # what the node agent's hang watchdog reads
            heartbeat = Heartbeat(
                run_dir, dist.rank, position, heartbeat_interval(cfg.train.hang_timeout)
            )
            heartbeat.start()
        try:
            if isinstance(task, MeasurementTask):  # 0a: its own procedure, no training
                summary = task.measure(cfg, dist, events, run_dir)
            else:
                assert isinstance(task, Task)
                scheme = get_algorithm(cfg.algorithm.name)
                fault = injector_for(
                    faults_from_launch(runs.read_launch(run_dir)), dist.rank, run_dir
                )
                summary = train(task, cfg, dist, events, run_dir, scheme, position, fault)
        finally:
            # joined, its final sample written, before the file closes and exit_now() skips
            # everything else; a failed run gets its final sample too
            sampler.stop()
            if heartbeat is not None:
                heartbeat.stop()
        summaries = dist.all_gather_object(asdict(summary))
    finally:
        events.close()
    if dist.is_main:
        result = runs.make_result(
            run_dir,
            task,
            cfg,
            state="finished",
            world_size=dist.world_size,
            backend=dist.backend,
            ranks=summaries,
        )
        write_result(run_dir, result)
    shutdown()
    return 0


def _cuda_index(device: torch.device) -> int | None:
    """The CUDA device this rank uses (for GPU resource metrics), or None on CPU."""
    if device.type != "cuda":
        return None
    import torch

    return device.index if device.index is not None else torch.cuda.current_device()


def exit_now(code: int) -> None:
    """Flush and leave without running C++ static destructors.

    With gloo, tearing down the process group and its TCPStore at interpreter exit sometimes
    aborts a rank ("terminate called without an active exception", ~1 run in 10 here) after all
    its work is done and recorded. Every file we own is closed and flushed by then, so skipping
    the destructors loses nothing and makes the exit code mean what it says.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
