"""Task 0a: the communication backend itself — collective latency and bus bandwidth.

Not a training task: no data, no model, no quality goal. Every rank allocates tensors of
log-spaced sizes (``bench.min_numel`` … ``bench.max_numel``, ``bench.points_per_decade`` per
decade) in each dtype the backend supports, and for each collective in ``bench.ops`` runs
``bench.warmup`` untimed iterations, then ``bench.repeats`` timed back-to-back after a barrier
(as nccl-tests does), CUDA-synchronised on GPUs. A collective ends when its slowest rank does,
so the time reported is the max over ranks (one max-all-reduce per point).

Bandwidths follow nccl-tests' definitions so numbers compare with theirs:

* algorithm bandwidth ``algbw`` = S / t, with S the bytes of the (per-rank) tensor — for
  all_gather S is the *gathered* output, n × the input;
* bus bandwidth ``busbw`` = algbw × f, f = 2(n−1)/n for all_reduce, (n−1)/n for all_gather,
  1 for broadcast: the bytes each link must carry, comparable across world sizes.

In the same run each rank measures its device's memory-copy bandwidth (``copy_`` of a
``bench.copy_mb`` buffer) as the ceiling to compare against. Results: ``comm`` events per point
(name ``OP/DTYPE/time`` in s and ``OP/DTYPE/busbw`` in GB/s, with ``step`` = element count, so
the master's series endpoint plots bandwidth against size), and the whole table in result.json
(``summary.measurements``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlbench.config import param, section
from mlbench.errors import ConfigError
from mlbench.tasks.base import DataInfo, MeasurementTask, RunConfig, Target, TrainConfig

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from mlbench.dist import DistContext
    from mlbench.telemetry.events import EventWriter
    from mlbench.telemetry.summary import RankSummary

OPS = ("all_reduce", "all_gather", "broadcast")
DTYPES = ("fp32", "fp16", "bf16")
BUS_FACTOR = {
    "all_reduce": lambda n: 2 * (n - 1) / n,
    "all_gather": lambda n: (n - 1) / n,
    "broadcast": lambda n: 1.0,
}


@dataclass
class CommBenchConfig:
    ops: tuple[str, ...] = param(OPS, help=f"collectives to measure, of {OPS}")
    dtypes: tuple[str, ...] = param(
        DTYPES, help=f"element types, of {DTYPES} (unsupported ones are skipped)"
    )
    min_numel: int = param(1, minimum=1, help="smallest tensor, in elements")
    max_numel: int = param(100_000_000, minimum=1, help="largest tensor, in elements")
    points_per_decade: int = param(2, minimum=1, help="log-spaced sizes per decade")
    warmup: int = param(3, minimum=0, help="untimed iterations per point")
    repeats: int = param(10, minimum=1, help="timed iterations per point (at most)")
    max_seconds_per_point: float = param(
        5.0, open=True, minimum=0, help="fewer repeats for a point whose first timing is slow"
    )
    copy_mb: float = param(256.0, open=True, minimum=1, help="memory-copy measurement buffer")


@dataclass
class CommBackendConfig(RunConfig):
    task: str = param("comm-backend", choices=("comm-backend",))
    train: TrainConfig = section(lambda: TrainConfig(max_epochs=1))
    bench: CommBenchConfig = section(CommBenchConfig)


def sizes(cfg: CommBenchConfig) -> list[int]:
    """Log-spaced element counts from min to max inclusive, without duplicates."""
    lo, hi = math.log10(cfg.min_numel), math.log10(cfg.max_numel)
    count = max(1, round((hi - lo) * cfg.points_per_decade))
    out = sorted({round(10 ** (lo + (hi - lo) * i / count)) for i in range(count + 1)})
    return [n for n in out if cfg.min_numel <= n <= cfg.max_numel]


def bus_bandwidth(op: str, nbytes: float, seconds: float, world_size: int) -> tuple[float, float]:
    """(algbw, busbw) in bytes/s, nccl-tests' definitions (see the module docstring)."""
    algbw = nbytes / seconds if seconds > 0 else 0.0
    return algbw, algbw * BUS_FACTOR[op](world_size)


class CommBackend(MeasurementTask):
    name = "comm-backend"
    task_id = "0a"
    title = "Communication backend: collective latency and bus bandwidth"
    dataset = "none (synthetic tensors, 1 to 1e8 elements, log-spaced)"
    model = "none"
    target = Target(metric="busbw", value=0.0, light_value=0.0, mode="max")
    config_cls = CommBackendConfig
    unit = "measurements"
    deviations = (
        "10 timed repetitions per size after 3 untimed ones (fewer for a size whose first "
        "timing exceeds bench.max_seconds_per_point), not the original's 100, so the full "
        "sweep of 3 collectives × 3 element types up to 1e8 elements stays within minutes on "
        "a CPU machine; bench.repeats=100 gives the original's count (a non-official run).",
        "bf16 is measured too where the backend supports it (the original: fp32, and fp16 "
        "where the backend allows), and each rank measures its memory-copy bandwidth as the "
        "ceiling to compare with.",
    )

    def validate(self, cfg: RunConfig, world_size: int) -> None:
        super().validate(cfg, world_size)
        assert isinstance(cfg, CommBackendConfig)
        b = cfg.bench
        for op in b.ops:
            if op not in OPS:
                raise ConfigError(f"bench.ops: {op!r} is not one of {OPS}")
        for dt in b.dtypes:
            if dt not in DTYPES:
                raise ConfigError(f"bench.dtypes: {dt!r} is not one of {DTYPES}")
        if b.min_numel > b.max_numel:
            raise ConfigError("bench.min_numel must not exceed bench.max_numel")
        if not b.ops or not b.dtypes:
            raise ConfigError("bench.ops and bench.dtypes must not be empty")

    def prepare_data(self, cfg: RunConfig) -> DataInfo:
        return DataInfo(0, 0, "synthetic tensors")

    def measure(
        self, cfg: RunConfig, dist: DistContext, events: EventWriter, run_dir: Path
    ) -> RankSummary:
        import torch

        from mlbench.telemetry.summary import RankSummary

        assert isinstance(cfg, CommBackendConfig)
        b = cfg.bench
        summary = RankSummary(rank=dist.rank)
        start = time.perf_counter()
        rows: list[dict[str, Any]] = []
        step = 0
        events.emit("event", "start", 0, step=0, epoch=0.0)
        copy_bw = _copy_bandwidth(dist, b.copy_mb)
        events.emit("comm", "memcpy_bandwidth", copy_bw / 1e9, step=0, epoch=0.0, unit="GB/s")
        for dtype_name in b.dtypes:
            dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[
                dtype_name
            ]
            for op in b.ops:
                if not _supported(op, dtype, dist):
                    events.emit("event", f"unsupported/{op}/{dtype_name}", 1, step=0, epoch=0.0)
                    continue
                for numel in sizes(b):
                    seconds, repeats = _time_op(op, numel, dtype, dist, b)
                    nbytes = numel * torch.tensor([], dtype=dtype).element_size()
                    if op == "all_gather":
                        nbytes *= dist.world_size
                    algbw, busbw = bus_bandwidth(op, nbytes, seconds, dist.world_size)
                    rows.append(
                        {
                            "op": op,
                            "dtype": dtype_name,
                            "numel": numel,
                            "bytes": nbytes,
                            "time": seconds,
                            "repeats": repeats,
                            "algbw_gbps": algbw / 1e9,
                            "busbw_gbps": busbw / 1e9,
                        }
                    )
                    key = f"{op}/{dtype_name}"
                    events.emit("comm", f"{key}/time", seconds, step=numel, epoch=0.0, unit="s")
                    events.emit(
                        "comm", f"{key}/busbw", busbw / 1e9, step=numel, epoch=0.0, unit="GB/s"
                    )
                    step += 1
        elapsed = time.perf_counter() - start
        peak = max((r["busbw_gbps"] for r in rows), default=0.0)
        summary.steps = step
        summary.wall_time = summary.train_time = elapsed
        summary.phases = {"communication": sum(r["time"] * r["repeats"] for r in rows)}
        summary.stop_reason = "done"
        summary.goal_reached = True
        summary.final_metrics = {
            "busbw": peak,
            "memcpy_gbps": copy_bw / 1e9,
            "busbw_vs_memcpy": peak / (copy_bw / 1e9) if copy_bw > 0 else 0.0,
        }
        summary.measurements = rows
        events.emit("event", "end", 1, step=step, epoch=0.0)
        return summary


def _supported(op: str, dtype: torch.dtype, dist: DistContext) -> bool:
    """Whether the backend runs ``op`` on ``dtype`` (gloo lacks some half-precision kernels)."""
    import torch

    t = torch.ones(4, dtype=dtype, device=dist.device)
    try:
        _run(op, t, [torch.empty_like(t) for _ in range(dist.world_size)], dist)
        dist.synchronize()
        return True
    except (RuntimeError, TypeError, ValueError):
        return False


def _run(op: str, t: torch.Tensor, out: list[torch.Tensor], dist: DistContext) -> None:
    import torch.distributed as tdist

    if dist.world_size == 1:  # nothing crosses a process boundary: a device copy stands in
        out[0].copy_(t)
        return
    if op == "all_reduce":
        tdist.all_reduce(t)
    elif op == "all_gather":
        tdist.all_gather(out, t)
    else:
        tdist.broadcast(t, src=0)


def _time_op(
    op: str, numel: int, dtype: torch.dtype, dist: DistContext, b: CommBenchConfig
) -> tuple[float, int]:
    """Seconds per call (max over ranks) and the number of timed calls."""
    import torch
    import torch.distributed as tdist

    t = torch.zeros(numel, dtype=dtype, device=dist.device)
    out = [torch.empty_like(t) for _ in range(dist.world_size if op == "all_gather" else 1)]
    for _ in range(b.warmup):
        _run(op, t, out, dist)

    def timed(calls: int) -> float:
        """Seconds for ``calls`` back-to-back calls started together (as nccl-tests times)."""
        dist.synchronize()
        if dist.world_size > 1:
            tdist.barrier()
        start = time.perf_counter()
        for _ in range(calls):
            _run(op, t, out, dist)
        dist.synchronize()
        return time.perf_counter() - start

    # a slow point gets fewer repeats; every rank must make the same number of calls, so the
    # count comes from one calibration call's time, agreed by a max-all-reduce
    first = torch.tensor([timed(1)], dtype=torch.float64, device=dist.device)
    dist.all_reduce_max(first)
    budget = b.max_seconds_per_point
    one = max(float(first), 1e-9)
    repeats = b.repeats if one * b.repeats <= budget else max(1, int(budget / one))
    per_call = torch.tensor([timed(repeats) / repeats], dtype=torch.float64, device=dist.device)
    dist.all_reduce_max(per_call)  # a collective ends when its slowest rank does
    return float(per_call), repeats


def _copy_bandwidth(dist: DistContext, megabytes: float) -> float:
    """Bytes/s of ``dst.copy_(src)`` on this rank's device (median of 5), the local ceiling."""
    import statistics

    import torch

    n = int(megabytes * 1e6 // 4)
    src = torch.ones(n, dtype=torch.float32, device=dist.device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(5):
        dist.synchronize()
        start = time.perf_counter()
        dst.copy_(src)
        dist.synchronize()
        times.append(time.perf_counter() - start)
    return n * 4 / statistics.median(times)
