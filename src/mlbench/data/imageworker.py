"""What one image-loader worker process runs: read files, sample each sample's crop, decode and
augment (or, for a device decode, only read and sample), and send the batch back to its rank.

Why a module of its own, free of torch: a worker is a *spawned* interpreter (never a fork of a
rank that has initialised gloo, whose threads and sockets a fork would copy half-alive), and
everything it imports it pays for at start-up and in memory, once per worker. This module needs
numpy, Pillow and simplejpeg only; :mod:`mlbench.data.imagestream` (the rank's side) holds the
tensors.

A sample's randomness is a function of ``(seed, epoch, index in the file list)`` alone, so the
batches are the same whatever the number of workers (or ranks) that decodes them.

Wire format (one pipe per worker, results only, in task order; tasks come on a queue): ``(batch,
"slot", (slot, shape))`` when the pixels were written into the task's shared-memory slot, ``(batch,
"pixels", shape)`` followed by the raw ``uint8`` bytes otherwise (``send_bytes``: no pickling, the
rank receives them straight into its tensor), ``(batch, "encoded", (datas, boxes, flips))`` for a
device decode, ``(batch, "data-error", line)`` for a :class:`DataError`, ``(batch, "error",
traceback)`` for anything else.
"""

from __future__ import annotations

import os
import queue
import signal
import sys
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlbench.data.crops import (
    Box,
    center_crop_box,
    decode_crop,
    image_size,
    random_resized_crop_box,
)
from mlbench.errors import DataError

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class WorkerConfig:
    train: bool
    seed: int  # non-negative
    image_size: int
    resize_size: int
    decode_on: str  # "cpu" or "device"
    threads: int = 1


# one task: (batch number, epoch, [(index in the file list, path), ...], shared-memory slot
# for the pixels or -1 to send them through the pipe)
Task = tuple[int, int, list[tuple[int, str]], int]


def sample_box(
    cfg: WorkerConfig, epoch: int, index: int, height: int, width: int
) -> tuple[Box, bool]:
    """The crop box (original pixels) and the flip of sample ``index`` in ``epoch``."""
    if not cfg.train:
        return center_crop_box(height, width, cfg.resize_size, cfg.image_size), False
    rng = np.random.default_rng([cfg.seed, epoch, index])
    box = random_resized_crop_box(height, width, rng)
    return box, bool(rng.random() < 0.5)


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise DataError(f"cannot read image {path}: {exc.strerror or exc}") from None


def pixels(
    cfg: WorkerConfig, epoch: int, items: list[tuple[int, str]], out: np.ndarray | None = None
) -> np.ndarray:
    """The batch decoded and augmented on the CPU: ``uint8 [n, 3, S, S]`` (written into
    ``out``'s first ``n`` rows when given: a shared-memory slot)."""
    s = cfg.image_size
    if out is None:
        out = np.empty((len(items), 3, s, s), dtype=np.uint8)
    out = out[: len(items)]
    for i, (index, path) in enumerate(items):
        data = _read(path)
        original = image_size(data, path)
        box, flip = sample_box(cfg, epoch, index, *original)
        out[i] = decode_crop(data, box, original, s, flip, name=path)
    return out


def encoded(
    cfg: WorkerConfig, epoch: int, items: list[tuple[int, str]]
) -> tuple[list[bytes], np.ndarray, np.ndarray]:
    """The batch for a device decode: the files' bytes, ``int64 [n, 4]`` boxes, ``bool [n]``
    flips (sizes from the headers only)."""
    datas: list[bytes] = []
    boxes = np.empty((len(items), 4), dtype=np.int64)
    flips = np.empty(len(items), dtype=bool)
    for i, (index, path) in enumerate(items):
        data = _read(path)
        box, flip = sample_box(cfg, epoch, index, *image_size(data, path))
        datas.append(data)
        boxes[i], flips[i] = box, flip
    return datas, boxes, flips


def run_task(cfg: WorkerConfig, task: Task, out: np.ndarray | None = None) -> tuple[Any, ...]:
    """One task's result header (and, for pixels, the array to send after it). Also what the
    rank calls itself with ``workers=0``."""
    batch, epoch, items = task[:3]
    try:
        if cfg.decode_on == "device":
            return (batch, "encoded", encoded(cfg, epoch, items))
        return (batch, "pixels", pixels(cfg, epoch, items, out))
    except DataError as exc:
        return (batch, "data-error", str(exc))
    except Exception:
        return (batch, "error", traceback.format_exc())


def limit_threads(threads: int) -> None:
    """Cap every thread pool a library in this process might start (decoding itself is
    single-threaded) so the workers take exactly ``workers x threads`` cores."""
    for var in THREAD_VARS:
        os.environ[var] = str(threads)
    torch = sys.modules.get("torch")  # only if something imported it: we never do
    if torch is not None:
        torch.set_num_threads(threads)


def slot_view(buf: Any, cfg: WorkerConfig, batch_size: int) -> np.ndarray:
    """A shared-memory slot as the ``uint8 [batch_size, 3, S, S]`` array it holds."""
    s = cfg.image_size
    return np.ndarray((batch_size, 3, s, s), dtype=np.uint8, buffer=buf)


def main(
    cfg: WorkerConfig,
    tasks: Any,
    conn: Any,
    parent: int,
    slots: tuple[str, ...] = (),
    batch_size: int = 0,
) -> None:
    """The worker's loop: a task from ``tasks``, its result on ``conn``, until ``None``, or
    until the rank (process ``parent``) is gone — killed outright, it closes nothing, so the
    worker checks every second that it is still the rank's child and never outlives it.

    ``slots``: the names of this worker's shared-memory segments (the rank creates, owns and
    unlinks them). A task naming a slot has its pixels written there and only a header sent:
    the rank copies them out once, instead of the bytes crossing a pipe (~400 MB/s here:
    ~0.1 s for a batch of 256 at 224 px)."""
    from multiprocessing import shared_memory

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the rank's to handle
    limit_threads(cfg.threads)
    shms = [shared_memory.SharedMemory(name=name) for name in slots]
    views = [slot_view(shm.buf, cfg, batch_size) for shm in shms]
    result: tuple[Any, ...] = ()
    while True:
        try:
            task = tasks.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent:
                break
            continue
        if task is None:
            break
        slot = task[3]
        result = run_task(cfg, task, views[slot] if slot >= 0 else None)
        try:
            if result[1] == "pixels" and slot >= 0:
                conn.send((result[0], "slot", (slot, result[2].shape)))
            elif result[1] == "pixels":
                array = result[2]
                conn.send((result[0], "pixels", array.shape))
                conn.send_bytes(memoryview(array).cast("B"))
            else:
                conn.send(result)
        except (BrokenPipeError, EOFError, OSError):
            break
    result = ()
    views.clear()  # no array may still point into a segment when it is closed
    for shm in shms:
        shm.close()
    conn.close()
