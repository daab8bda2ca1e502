"""A small spawn helper for real multi-process ``torch.distributed`` tests (gloo on CPU).

``run_ranks(fn, world_size, *args)`` starts ``world_size`` fresh processes (spawn, not fork: each
gets a clean torch), joins them into one gloo group over a free localhost port, calls
``fn(dist_ctx, *args)`` on each and returns the per-rank return values in rank order. Any rank's
exception is re-raised in the caller with that rank's traceback; a hang fails after ``timeout``.
``fn`` must be importable (a module-level function).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import queue
import traceback
from collections.abc import Callable
from typing import Any


class RankFailed(RuntimeError):
    pass


def _entry(
    fn: Callable[..., Any],
    rank: int,
    world_size: int,
    port: int,
    args: tuple[Any, ...],
    results: Any,
) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
    )
    try:
        import torch

        from mlbench.dist import init_from_env, shutdown

        torch.set_num_threads(1)
        ctx = init_from_env("gloo", timeout_s=60)
        try:
            value = fn(ctx, *args)
        finally:
            shutdown()
        # plain pickle (bytes): torch's queue reducers share storage by fd, which dies with us
        results.put((rank, True, pickle.dumps(value)))
    except BaseException:
        results.put((rank, False, traceback.format_exc()))


def run_ranks(
    fn: Callable[..., Any], world_size: int, *args: Any, timeout: float = 120.0
) -> list[Any]:
    from mlbench.launch.local import free_port

    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    procs = [
        ctx.Process(target=_entry, args=(fn, r, world_size, port, args, results), daemon=True)
        for r in range(world_size)
    ]
    for p in procs:
        p.start()
    out: dict[int, Any] = {}
    try:
        for _ in range(world_size):
            try:
                rank, ok, value = results.get(timeout=timeout)
            except queue.Empty:
                raise RankFailed(f"ranks did not finish within {timeout} s") from None
            if not ok:
                raise RankFailed(f"rank {rank} failed:\n{value}")
            out[rank] = pickle.loads(value)
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
    return [out[r] for r in range(world_size)]


def scheme_config(name: str, **options: Any) -> Any:
    """Scheme ``name``'s config section with ``options`` set, unchecked (tests pass bad values on
    purpose to exercise ``check_config``)."""
    from mlbench.registry import get_algorithm

    return get_algorithm(name).config_cls(name=name, **options)
