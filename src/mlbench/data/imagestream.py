"""A streaming image loader: files decoded and augmented in worker processes, batch by batch.

Why not ``torch.utils.data.DataLoader``: its workers fork the rank (after gloo is up, a fork
copies its threads' locks half-held), import torch in every worker, and hand randomness out per
worker, so batches change with the worker count. Here:

* **Shards** — train: one permutation of the whole file list per epoch, seeded by ``(seed,
  epoch)`` and the same on every rank, cut into equal disjoint shards (the remainder, < world
  size images, sits out that epoch; every rank takes the same number of steps); it is the set
  :func:`mlbench.data.partition.shard_indices` gives for that seed, kept in permuted order
  rather than sorted (a sorted shard would batch one class at a time). Val: every image exactly
  once over the ranks, in file order (``shard_indices`` with no shuffle).
* **Workers** — a pool of ``workers`` spawned processes per loader, started on the first
  iteration and kept across epochs, each capped at ``threads`` threads (``docs/timing.md``:
  they take ``workers x threads`` cores beside the rank). Batch ``b`` goes to worker ``b mod
  workers``, at most ``prefetch`` batches per worker in flight, and comes back in order, so the
  rank sees the same batches whatever the worker count; ``workers=0`` decodes in the rank.
  A worker writes a batch's pixels into one of its 2 shared-memory slots and sends only a
  header; the rank copies them out once (16 ms for 256 x 224 px here, against ~100 ms through
  a pipe). Where /dev/shm has no room (a container's 64 MB default), they cross the pipe.
* **Randomness** — each sample's crop and flip are drawn from ``(seed, epoch, index of the
  file)`` (:mod:`mlbench.data.imageworker`), not from a worker's stream.
* **Failures** — a file no decoder reads raises its one-line :class:`DataError` in the rank; a
  worker that dies raises too. ``close()``, garbage collection and interpreter exit stop the
  workers, and a worker whose rank was killed exits on its own within a second.
* ``decode_on="device"`` — the workers only read the bytes and sample the boxes (image sizes
  from the headers); the rank decodes, crops and flips the batch on ``device`` through
  :func:`mlbench.data.device_decode.decode_batch`.

The loop times ``next()`` on this loader as its ``data`` phase: the wait for a batch the workers
have not finished, the copy to the device, and a device decode (``docs/timing.md``).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import weakref
from collections import deque
from collections.abc import Iterator, Sequence
from multiprocessing import shared_memory
from typing import Any

import numpy as np
import torch

from mlbench.data import imageworker
from mlbench.data.imageworker import Task, WorkerConfig
from mlbench.data.partition import shard_indices
from mlbench.errors import ConfigError, DataError

Batch = tuple[torch.Tensor, torch.Tensor]
PREFETCH = 2  # batches in flight per worker
SEED_MASK = (1 << 63) - 1


def epoch_seed(seed: int, epoch: int) -> int:
    """The train permutation's seed for ``epoch``: one integer from ``(seed, epoch)``, the same
    on every rank (what :func:`shard_indices` is handed for that epoch)."""
    state = np.random.SeedSequence([seed & SEED_MASK, epoch]).generate_state(2, np.uint32)
    return int(state[0]) << 32 | int(state[1])


@contextlib.contextmanager
def _children_allowed() -> Iterator[None]:
    """Let a daemonic process (a rank started by ``mlbench.testing.run_ranks``, or any
    ``daemon=True`` parent) start the workers. multiprocessing refuses because a daemon is
    terminated without running its exit handlers, which would orphan its children; these
    workers do not depend on those handlers — each polls its parent and exits within a second
    of the rank's end (``imageworker.main``) — so the flag is lifted for the start only."""
    config = getattr(mp.current_process(), "_config", {})
    daemonic = config.get("daemon", False)
    config["daemon"] = False
    try:
        yield
    finally:
        if daemonic:
            config["daemon"] = daemonic


class _Pool:
    """The worker processes of one loader: a task queue each, a result pipe each, and what is
    in flight where. Holds no reference to the loader, so the loader's finaliser can own it."""

    def __init__(self, cfg: WorkerConfig, workers: int, batch_size: int) -> None:
        ctx = mp.get_context("spawn")
        self.cfg, self.batch_size = cfg, batch_size
        self.procs: list[Any] = []
        self.tasks: list[Any] = []
        self.conns: list[Any] = []
        self.shms: list[list[Any]] = [[] for _ in range(workers)]
        self.inflight: list[deque[int]] = [deque() for _ in range(workers)]
        nbytes = batch_size * 3 * cfg.image_size**2
        if cfg.decode_on == "cpu" and _shm_room(workers * PREFETCH * nbytes):
            self.shms = [
                [shared_memory.SharedMemory(create=True, size=nbytes) for _ in range(PREFETCH)]
                for _ in range(workers)
            ]
        for w in range(workers):
            tasks = ctx.Queue()
            mine, theirs = ctx.Pipe(duplex=False)
            names = tuple(shm.name for shm in self.shms[w])
            proc = ctx.Process(
                target=imageworker.main,
                args=(cfg, tasks, theirs, os.getpid(), names, batch_size),
                name=f"mlbench-image-worker-{w}",
                daemon=True,
            )
            with _children_allowed():
                proc.start()
            theirs.close()  # the worker's end lives in the worker only: its death reads as EOF
            self.procs.append(proc)
            self.tasks.append(tasks)
            self.conns.append(mine)

    def slot(self, batch: int) -> int:
        """The shared-memory slot of ``batch`` in its worker (-1: none, use the pipe). A
        worker's slots take its batches in turn, so a slot is free again once the batch
        ``PREFETCH`` before in the same worker was received — which the rank's bounded
        submission guarantees."""
        return (batch // len(self.procs)) % PREFETCH if self.shms[0] else -1

    def submit(self, worker: int, task: Task) -> None:
        self.tasks[worker].put(task)  # a feeder thread writes it: put never blocks the rank
        self.inflight[worker].append(task[0])

    def receive(self, worker: int, into: Any = None) -> tuple[Any, ...]:
        """The oldest in-flight result of ``worker``; a ``pixels`` result's bytes land in
        ``into(shape)`` (a callable giving a tensor), or are read and dropped."""
        conn, proc = self.conns[worker], self.procs[worker]
        try:
            while not conn.poll(1.0):
                if not proc.is_alive():
                    raise EOFError
            header = conn.recv()
            if header[1] == "slot":
                slot, shape = header[2]
                view = imageworker.slot_view(self.shms[worker][slot].buf, self.cfg, self.batch_size)
                array = into(shape) if into is not None else None
                if array is not None:
                    np.copyto(array.numpy(), view[: shape[0]])
                del view  # no view may outlive the segment (close() refuses)
                header = (header[0], "pixels", array)
            elif header[1] == "pixels":
                if into is None:
                    conn.recv_bytes()
                    header = (header[0], "pixels", None)
                else:
                    array = into(header[2])
                    conn.recv_bytes_into(array.numpy().reshape(-1))  # flat: sized in bytes
                    header = (header[0], "pixels", array)
        except (EOFError, OSError):
            proc.join(1.0)
            raise DataError(
                f"image loader worker {worker} exited unexpectedly (exit code {proc.exitcode}; "
                "killed for memory? fewer data workers need less)"
            ) from None
        done = self.inflight[worker].popleft()
        assert done == header[0], (done, header[0])  # a worker answers its tasks in order
        return header

    def drain(self) -> None:
        """Receive and drop everything in flight (an iteration stopped early, or failed)."""
        for w in range(len(self.procs)):
            while self.inflight[w]:
                self.receive(w)


def _shutdown(pool: _Pool) -> None:
    """Stop the workers: ask, wait a moment, then terminate; close the pipes and queues."""
    for tasks, proc in zip(pool.tasks, pool.procs, strict=True):
        if proc.is_alive():
            with contextlib.suppress(OSError, ValueError):
                tasks.put(None)
    for proc in pool.procs:
        proc.join(2.0)
        if proc.is_alive():
            proc.terminate()
            proc.join(2.0)
        if proc.is_alive():  # pragma: no cover - a worker stuck in uninterruptible I/O
            proc.kill()
            proc.join()
    for tasks in pool.tasks:
        tasks.cancel_join_thread()  # unsent tasks of a stopped worker must not block exit
        tasks.close()
    for conn in pool.conns:
        conn.close()
    for shm in (shm for mine in pool.shms for shm in mine):
        shm.close()
        shm.unlink()
    pool.procs, pool.tasks, pool.conns, pool.shms = [], [], [], []


def _shm_room(nbytes: int) -> bool:
    """Whether /dev/shm can hold ``nbytes`` more (a container's default is 64 MB: writing
    past it kills the writer with SIGBUS, so the pipe is used instead)."""
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return False
    return st.f_bavail * st.f_frsize >= 2 * nbytes


class ImageStreamLoader:
    """This rank's batches of ``(uint8 [B,3,S,S], int64 [B])`` on ``device`` from image files
    (normalisation is the task's, on the device). Implements :class:`mlbench.data.loader.Loader`.
    """

    def __init__(
        self,
        files: Sequence[str],
        labels: Sequence[int],
        batch_size: int,
        *,
        train: bool,
        rank: int,
        world_size: int,
        seed: int,
        image_size: int = 224,
        resize_size: int = 256,
        workers: int = 2,
        threads: int = 1,
        device: torch.device | None = None,
        decode_on: str = "cpu",
        drop_last: bool | None = None,
    ) -> None:
        if len(files) != len(labels):
            raise ValueError(f"{len(files)} files but {len(labels)} labels")
        if decode_on not in ("cpu", "device"):
            raise ConfigError(f"decode_on must be 'cpu' or 'device', not {decode_on!r}")
        if batch_size < 1 or workers < 0 or threads < 1 or image_size < 1:
            raise ConfigError(
                "the image loader needs batch_size >= 1, workers >= 0, threads >= 1, "
                f"image_size >= 1 (got {batch_size}, {workers}, {threads}, {image_size})"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of size {world_size}")
        self.files = list(files)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.batch_size = batch_size
        self.train, self.rank, self.world_size, self.seed = train, rank, world_size, seed
        self.image_size, self.workers = image_size, workers
        self.device = device or torch.device("cpu")
        self.decode_on = decode_on
        self.drop_last = train if drop_last is None else drop_last
        self.cfg = WorkerConfig(
            train=train,
            seed=seed & SEED_MASK,
            image_size=image_size,
            resize_size=resize_size,
            decode_on=decode_on,
            threads=threads,
        )
        self.epoch = 0
        self._pool: _Pool | None = None
        self._finalizer: weakref.finalize | None = None
        self._current: _Epoch | None = None

    # -- the Loader protocol -------------------------------------------------------------

    @property
    def num_samples(self) -> int:
        """Images this rank sees per epoch."""
        n = len(self.files)
        if self.train:
            return n // self.world_size
        return len(np.array_split(np.arange(n), self.world_size)[self.rank])

    def __len__(self) -> int:
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def set_epoch(self, epoch: int) -> None:
        """Epoch ``epoch``'s shard order and augmentation (a function of seed and epoch only)."""
        self.epoch = epoch

    def state_dict(self) -> dict[str, Any]:
        """All a checkpoint needs: order and augmentation are functions of (seed, epoch)."""
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])

    def shard(self) -> np.ndarray:
        """This rank's file indices for the current epoch, in the order they are batched."""
        n = len(self.files)
        if not self.train:
            return shard_indices(n, self.rank, self.world_size, seed=-1, equal=False)
        order = np.random.default_rng(epoch_seed(self.seed, self.epoch)).permutation(n)
        per = n // self.world_size
        return order[self.rank * per : (self.rank + 1) * per]

    def __iter__(self) -> Iterator[Batch]:
        if self._current is not None:
            self._current.stop()  # one iteration at a time: the previous one is over
        self._current = _Epoch(self)
        return self._current

    def close(self) -> None:
        """Stop the worker processes (idempotent; a later iteration starts new ones)."""
        if self._current is not None:
            self._current.finished = True
            self._current = None
        self._discard_pool()

    def _discard_pool(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
        self._pool = None

    # -- the rank's side of a batch ------------------------------------------------------

    def _pool_started(self) -> _Pool:
        if self._pool is None:
            self._pool = _Pool(self.cfg, self.workers, self.batch_size)
            self._finalizer = weakref.finalize(self, _shutdown, self._pool)
        return self._pool

    def _pixels(self, shape: tuple[int, ...]) -> torch.Tensor:
        """A fresh tensor for a batch's pixels to be received into (page-locked for a CUDA
        device, so the copy to it can run asynchronously)."""
        return torch.empty(shape, dtype=torch.uint8, pin_memory=self.device.type == "cuda")

    def _finish(self, result: tuple[Any, ...], idx: np.ndarray) -> Batch:
        """A worker's result as this rank's batch on the device (or its error raised)."""
        kind, payload = result[1], result[2]
        if kind == "data-error":
            raise DataError(payload)
        if kind == "error":
            raise RuntimeError(f"image loader worker failed:\n{payload}")
        y = torch.from_numpy(self.labels[idx]).to(self.device, non_blocking=True)
        if kind == "encoded":
            from mlbench.data.device_decode import decode_batch

            datas, boxes, flips = payload
            x = decode_batch(
                datas,
                torch.from_numpy(boxes),
                torch.from_numpy(flips),
                self.image_size,
                self.device,
            )
            return x, y
        x = payload if isinstance(payload, torch.Tensor) else torch.from_numpy(payload)
        return x.to(self.device, non_blocking=True), y


class _Epoch:
    """One pass over the shard: submits batches ahead, returns them in order. ``skip(n)``
    moves past ``n`` batches without decoding them (a resumed epoch's replay)."""

    def __init__(self, loader: ImageStreamLoader) -> None:
        self.loader = loader
        self.epoch = loader.epoch
        self.order = loader.shard()
        self.batches = len(loader)
        self.next = 0  # the next batch to return
        self.sent = 0  # batches submitted to workers
        self.finished = False

    def __iter__(self) -> _Epoch:
        return self

    def _items(self, b: int) -> tuple[np.ndarray, list[tuple[int, str]]]:
        bs = self.loader.batch_size
        idx = self.order[b * bs : (b + 1) * bs]
        files = self.loader.files
        return idx, [(int(i), files[i]) for i in idx]

    def __next__(self) -> Batch:
        ld = self.loader
        if self.finished or self.next >= self.batches:
            self.stop()
            raise StopIteration
        b = self.next
        idx, items = self._items(b)
        if ld.workers == 0:
            result = imageworker.run_task(ld.cfg, (b, self.epoch, items, -1))
        else:
            pool = ld._pool_started()
            depth = PREFETCH * ld.workers
            while self.sent < min(self.batches, self.next + depth):
                _, sent_items = self._items(self.sent)
                task = (self.sent, self.epoch, sent_items, pool.slot(self.sent))
                pool.submit(self.sent % ld.workers, task)
                self.sent += 1
            try:
                result = pool.receive(b % ld.workers, ld._pixels)
            except DataError:  # a worker died: its pool is of no further use
                self.finished = True
                ld._discard_pool()
                raise
        self.next += 1
        try:
            return ld._finish(result, idx)
        except Exception:
            self.stop()
            raise

    def skip(self, n: int) -> int:
        """Move past the next ``n`` batches without decoding them; returns how many there
        were (fewer at the epoch's end)."""
        count = max(0, min(n, self.batches - self.next))
        pool, end = self.loader._pool, self.next + count
        while self.next < min(end, self.sent) and pool is not None:  # already asked for
            pool.receive(self.next % self.loader.workers)
            self.next += 1
        self.next = end
        self.sent = max(self.sent, self.next)
        return count

    def stop(self) -> None:
        """End this iteration: what is still in flight is received and dropped."""
        self.finished = True
        pool = self.loader._pool
        if pool is not None and self.sent > self.next:
            try:
                pool.drain()
            except DataError:  # a worker died: the next iteration starts a new pool
                self.loader._discard_pool()
        self.sent = self.next
