"""Per-worker resource sampling: events of kind ``resource`` (the dashboard's per-worker charts).

A :class:`ResourceSampler` runs in a daemon thread of each worker and, every
``train.resource_every_seconds`` seconds, appends one record per metric to the rank's event file:

============== ====== ===========================================================================
name           unit   value
============== ====== ===========================================================================
cpu_percent    %      this process's CPU use (all its threads, user + system) since the previous
                      sample, in % of one core: 250 means two and a half cores busy. The same
                      quantity as psutil's ``Process.cpu_percent``, read from the process CPU
                      clock (nanosecond resolution, not 10 ms ticks). The first sample covers
                      the process's life so far (interpreter start-up, imports, data loading).
                      Capped at 100 × the machine's cores: over a very short interval the
                      kernel's accounting can jump by a scheduler tick and read higher.
memory_rss     B      resident set size of this process
net_sent       B      bytes sent since the sampler started, **host-wide** (all interfaces,
                      loopback included): ``psutil.net_io_counters`` — psutil has no per-process
                      network counters, so ranks on one host all report the same traffic, and
                      traffic of other processes on the host is included
net_recv       B      bytes received, likewise host-wide and cumulative since the sampler started
threads        —      OS threads of this process (torch intra-op pool, gloo/nccl threads, ...)
gpu_util       %      only when this rank uses a CUDA device and NVML is importable (``pynvml``,
                      from the optional nvidia-ml-py package): % of the last sample period in
                      which a kernel ran on the device (what nvidia-smi shows), device-wide
gpu_memory     B      with ``gpu_util``: device memory in use, device-wide (all processes)
============== ====== ===========================================================================

Each record carries the training loop's step and epoch at sampling time, read from a callable the
loop keeps current (:class:`mlbench.train.loop.LoopPosition`); it may be one step behind, which
is as precise as a sample taken between steps can be. One sample is written when the sampler
starts and a final one when it stops, so even a run shorter than the interval has two.

Sampling must not disturb the timing it sits beside: a sample costs a few hundred microseconds of
``/proc`` reads (docs/timing.md has the measured number), the thread sleeps in between, and it
shares the event file with the training thread through :class:`EventWriter`'s lock.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil

from mlbench.telemetry.events import EventWriter

log = logging.getLogger(__name__)

#: every metric the sampler can emit, with its unit (``None``: a plain count)
RESOURCE_UNITS: dict[str, str | None] = {
    "cpu_percent": "%",
    "memory_rss": "B",
    "net_sent": "B",
    "net_recv": "B",
    "threads": None,
    "gpu_util": "%",
    "gpu_memory": "B",
}
CPU_METRICS = ("cpu_percent", "memory_rss", "net_sent", "net_recv", "threads")
GPU_METRICS = ("gpu_util", "gpu_memory")

Position = Callable[[], tuple[int, float]]


_CORES = os.cpu_count() or 1


def _at_start() -> tuple[int, float]:
    return 0, 0.0


def process_age() -> float:
    """Seconds since this process started (monotonic on Linux; wall-clock based elsewhere).

    psutil's ``create_time`` is built on a boot time rounded to whole seconds, so for a young
    process it can be off by most of a second; on Linux the start tick is compared with
    ``CLOCK_BOOTTIME`` instead (10 ms resolution).
    """
    try:
        with open("/proc/self/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 of proc(5); the first two precede ")"
        return time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError, AttributeError):
        return time.time() - psutil.Process().create_time()


class _Gpu:
    """NVML readings for one CUDA device; every failure turns the affected metric off, once."""

    def __init__(self, pynvml: Any, handle: Any) -> None:
        self.nvml, self.handle = pynvml, handle
        self.enabled = set(GPU_METRICS)

    @classmethod
    def open(cls, cuda_index: int) -> _Gpu | None:
        try:
            import pynvml  # nvidia-ml-py; optional
        except ImportError:
            return None
        try:
            pynvml.nvmlInit()
        except Exception as exc:  # NVMLError: no driver, no libnvidia-ml ...
            log.warning("resource sampler: no GPU metrics (NVML: %s)", exc)
            return None
        try:
            return cls(pynvml, _nvml_handle(pynvml, cuda_index))
        except Exception as exc:
            log.warning("resource sampler: no GPU metrics (device %d: %s)", cuda_index, exc)
            with contextlib.suppress(Exception):
                pynvml.nvmlShutdown()
            return None

    def read(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name in tuple(self.enabled):
            try:
                if name == "gpu_util":
                    out[name] = float(self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu)
                else:
                    out[name] = int(self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used)
            except Exception as exc:
                self.enabled.discard(name)
                log.warning("resource sampler: %s turned off (NVML: %s)", name, exc)
        return out

    def close(self) -> None:
        with contextlib.suppress(Exception):  # best effort at exit
            self.nvml.nvmlShutdown()


def _nvml_handle(pynvml: Any, cuda_index: int) -> Any:
    """NVML's handle for torch's CUDA device ``cuda_index``.

    NVML numbers every GPU of the host and ignores ``CUDA_VISIBLE_DEVICES``; the device's UUID is
    the same in both worlds, so that is what connects them.
    """
    import torch

    uuid = str(torch.cuda.get_device_properties(cuda_index).uuid)
    if not uuid.startswith(("GPU-", "MIG-")):
        uuid = f"GPU-{uuid}"
    try:
        return pynvml.nvmlDeviceGetHandleByUUID(uuid.encode())
    except Exception:
        if os.environ.get("CUDA_VISIBLE_DEVICES") is None:
            return pynvml.nvmlDeviceGetHandleByIndex(cuda_index)
        raise


class ResourceSampler:
    """Samples this process's resources into ``events`` every ``interval`` seconds (0: never).

    ``position`` returns the loop's current ``(step, epoch)``. ``cuda_index`` is the CUDA device
    this rank uses (``None`` on CPU): GPU metrics are added when it is set and ``pynvml`` imports.

    ``start()`` writes the first sample and starts the daemon thread; ``stop()`` wakes it, lets it
    write the final sample and joins it — call it before closing ``events``.
    """

    def __init__(
        self,
        events: EventWriter,
        interval: float,
        *,
        position: Position = _at_start,
        cuda_index: int | None = None,
    ) -> None:
        if not math.isfinite(interval) or interval < 0:
            raise ValueError(f"resource sampling interval must be >= 0 seconds, got {interval!r}")
        self.events = events
        self.interval = float(interval)
        self.position = position
        self.cuda_index = cuda_index
        self.samples = 0  # samples written (each is one record per metric)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc = psutil.Process()
        self._gpu: _Gpu | None = None
        self._net_start: tuple[int, int] | None = None
        self._cpu_last: tuple[float, float] | None = None  # (process CPU s, monotonic s)
        self._failed: set[str] = set()

    @property
    def enabled(self) -> bool:
        return self.interval > 0

    # ------------------------------------------------------------------ reading
    def _net(self) -> tuple[int, int] | None:
        counters = psutil.net_io_counters()  # nowrap: 32-bit NIC counters that wrap are fixed up
        return None if counters is None else (counters.bytes_sent, counters.bytes_recv)

    def read(self) -> dict[str, float]:
        """One reading of every available metric (no event written). Not thread-safe: the
        sampler's own thread is its only caller once started."""
        values: dict[str, float] = {}
        now, cpu = time.monotonic(), time.process_time()
        if self._cpu_last is None:
            cpu_seconds, elapsed = cpu, process_age()
        else:
            cpu_seconds, elapsed = cpu - self._cpu_last[0], now - self._cpu_last[1]
        self._cpu_last = (cpu, now)
        share = 100.0 * cpu_seconds / elapsed if elapsed > 0 else 0.0
        # over a very short interval (a stop right after a tick) the kernel's CPU accounting
        # can advance by a whole scheduler tick and read as several cores busy on a 2-core
        # machine (698 % was seen in CI): no process uses more than every core
        values["cpu_percent"] = min(share, 100.0 * _CORES)
        rss = self._guarded("memory_rss", lambda: self._proc.memory_info().rss)
        if rss is not None:
            values["memory_rss"] = rss
        threads = self._guarded("threads", self._proc.num_threads)
        if threads is not None:
            values["threads"] = threads
        net = self._guarded("network", self._net)
        if net is not None:
            if self._net_start is None:
                self._net_start = net
            # max(): a counter reset (interface re-created) must not make the series go backwards
            values["net_sent"] = max(net[0] - self._net_start[0], 0)
            values["net_recv"] = max(net[1] - self._net_start[1], 0)
        if self._gpu is not None:
            values.update(self._gpu.read())
        return values

    def _guarded(self, what: str, fn: Callable[[], Any]) -> Any:
        """``fn()``, or ``None`` from then on (warned once) when the platform can't give it."""
        if what in self._failed:
            return None
        try:
            return fn()
        except Exception as exc:
            self._failed.add(what)
            log.warning("resource sampler: no %s metrics (%s: %s)", what, type(exc).__name__, exc)
            return None

    def sample(self) -> dict[str, float]:
        """Read every metric and write one ``resource`` record each; returns the values."""
        step, epoch = self.position()
        values = self.read()
        for name, value in values.items():
            self.events.emit(
                "resource",
                name,
                value,
                step=step,
                epoch=round(epoch, 6),
                unit=RESOURCE_UNITS[name],
            )
        self.samples += 1
        return values

    # ------------------------------------------------------------------ thread
    def start(self) -> None:
        """Write the first sample and start sampling in the background.

        A no-op when disabled, already started, or stopped (a sampler runs once).
        """
        if not self.enabled or self._thread is not None or self._stop.is_set():
            return
        if self.cuda_index is not None:
            self._gpu = _Gpu.open(self.cuda_index)
        self._sample_safely()
        self._thread = threading.Thread(
            target=self._run, name=f"mlbench-resources-{self.events.rank}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        due = time.monotonic() + self.interval
        while not self._stop.wait(max(due - time.monotonic(), 0.0)):
            self._sample_safely()
            due += self.interval
            now = time.monotonic()
            if due <= now:  # the process was stalled past a tick: resume the grid, don't burst
                due = now + self.interval
        self._sample_safely()  # the final sample

    def _sample_safely(self) -> None:
        try:
            self.sample()
        except Exception as exc:  # never let telemetry kill or stall the worker
            log.warning("resource sampler: sample failed (%s: %s)", type(exc).__name__, exc)

    def stop(self, timeout: float = 10.0) -> None:
        """Write the final sample and join the thread (idempotent)."""
        thread, self._thread = self._thread, None
        self._stop.set()
        if thread is None:
            return
        thread.join(timeout)
        if thread.is_alive():  # stuck in a read; its late records are refused once events close
            log.warning("resource sampler: thread did not stop within %.0f s", timeout)
        elif self._gpu is not None:
            self._gpu.close()
            self._gpu = None

    def __enter__(self) -> ResourceSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
