"""The network probe every rank of a ``--network`` run makes before training (docs/network.md).

It reuses task 0a's timing (:func:`mlbench.tasks.comm_backend._time_op`: warm-up, barrier,
back-to-back calls, max over ranks) in-process, on the run's own process group and its own
shaped links, so what is recorded is what training will see — not a separate run in other
namespaces. Two points:

* bandwidth: the bus bandwidth (nccl-tests' definition, 0a's) of an fp32 all-reduce sized to
  take ~0.3 s at the requested rate (256 KiB … 16 MiB); the warm-up calls also drain the bucket;
* latency: the time of a 1-element all-reduce — about one round trip plus gloo's overhead, not a
  one-way delay (docs/network.md says so).

Rank 0 writes ``network-probe.json`` in the run directory; the launcher merges it into
result.json's ``network`` with the request and the tolerance. The probe's seconds are before the
training clock starts: they never count in time-to-accuracy.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlbench.dist import DistContext

PROBE_FILE = "network-probe.json"
PROBE_SECONDS = 0.3
MIN_BYTES = 256 * 1024
MAX_BYTES = 16 * 1024 * 1024


def probe_bytes(requested_bps: float) -> int:
    return int(min(MAX_BYTES, max(MIN_BYTES, requested_bps / 8 * PROBE_SECONDS)))


def probe(dist: DistContext, requested_bps: float) -> dict[str, Any]:
    """Measure this run's links (a collective: every rank calls it)."""
    import torch

    from mlbench.tasks.comm_backend import CommBenchConfig, _time_op, bus_bandwidth

    started = time.perf_counter()
    bench = CommBenchConfig(warmup=2, repeats=5, max_seconds_per_point=3.0)
    nbytes = probe_bytes(requested_bps)
    seconds, repeats = _time_op("all_reduce", nbytes // 4, torch.float32, dist, bench)
    _, busbw = bus_bandwidth("all_reduce", nbytes // 4 * 4, seconds, dist.world_size)
    small = CommBenchConfig(warmup=3, repeats=20, max_seconds_per_point=2.0)
    latency, _ = _time_op("all_reduce", 1, torch.float32, dist, small)
    return {
        "bandwidth_bps": busbw * 8,
        "latency_s": latency,
        "method": "0a all_reduce fp32: bus bandwidth of one size; latency = 1-element time",
        "probe_bytes": nbytes // 4 * 4,
        "repeats": repeats,
        "probe_seconds": time.perf_counter() - started,
    }


def run_probe(dist: DistContext, run_dir: Path, requested_bps: float) -> None:
    """Probe (all ranks) and write the record (rank 0)."""
    if dist.world_size < 2:
        return
    result = probe(dist, requested_bps)
    if dist.is_main:
        tmp = run_dir / (PROBE_FILE + ".tmp")
        tmp.write_text(json.dumps(result, indent=2))
        tmp.replace(run_dir / PROBE_FILE)


def read_probe(run_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((run_dir / PROBE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
