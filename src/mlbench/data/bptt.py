"""Language-model batching: a token stream cut into columns, read in BPTT windows (task 3a).

The reference layout ("batchify"): the stream is trimmed to a multiple of ``B`` tokens and cut
into ``B`` contiguous segments, which become the columns of a ``[rows, B]`` matrix; a step reads
rows ``i … i+L-1`` as inputs and rows ``i+1 … i+L`` as targets, and an LSTM's hidden state is
carried from one window to the next, so every column is read as one long text.

**Training across k ranks.** The stream is cut into ``20·k`` columns and rank ``r`` takes columns
``20r … 20r+19``: the k ranks together are exactly one worker with batch ``20·k`` (what the
reference did), and no token is read by two ranks. Window lengths are random (70 with p 0.95,
else 35; then ``int(N(·, 5))``, at least 5 — the reference's draw, in its order) and come from a
generator seeded by ``(seed, epoch)`` only, so every rank draws the same lengths without
communicating and every rank takes the same number of steps (a synchronous collective per step
needs that). The number of windows is known before the epoch starts, so ``len()`` is exact.

**Validation across k ranks.** The reference evaluates 10 columns with windows of 70 and carried
state. Ranks here split *those 10 columns* (contiguous blocks, sizes differing by at most one):
every target of the reference evaluation is scored exactly once over the ranks, and summing
(loss·tokens, tokens) over ranks gives the single-worker number whatever k is. Splitting along
time instead would cut the carried state at rank boundaries; cutting into ``10·k`` columns would
make the metric depend on k. Ranks beyond the tenth get no column and contribute zeros.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

#: the reference's window length (training base, validation fixed)
BPTT = 70


@dataclass(frozen=True)
class WindowDraw:
    """How training window lengths are drawn — the reference's draw and its defaults: ``bptt``
    with probability ``p_full``, else ``bptt / 2``; then ``int(N(that, sigma))``, at least
    ``min_len``. One value, so the four numbers travel together from the config to the draw."""

    bptt: int = BPTT
    p_full: float = 0.95
    sigma: float = 5.0
    min_len: int = 5


class Window(NamedTuple):
    """One BPTT window: ``inputs`` and ``targets`` are ``[seq_len, columns]`` token ids, the
    targets one row later. ``seq_len`` is carried separately so the task can scale the step's lr
    by ``seq_len / 70`` without looking at shapes. It is the window's real length: the reference
    scales by the drawn length, which differs only for an epoch's last window when it is cut."""

    inputs: torch.Tensor
    targets: torch.Tensor
    seq_len: int


def batchify(stream: torch.Tensor, columns: int) -> torch.Tensor:
    """``[rows, columns]``: column ``j`` holds tokens ``j·rows … (j+1)·rows − 1``; the last
    ``len(stream) mod columns`` tokens are dropped (as the reference does)."""
    if columns < 1:
        raise ValueError(f"columns must be at least 1, not {columns}")
    rows = len(stream) // columns
    return stream[: rows * columns].view(columns, rows).t().contiguous()


def _as_tensor(stream: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(stream, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(stream, dtype=np.int64))
    return stream.to(torch.int64)


def draw_lengths(rows: int, seed: int, epoch: int, draw: WindowDraw = WindowDraw()) -> list[int]:
    """The window lengths of one epoch over ``rows`` rows (a function of its arguments only).

    As the reference: windows start while ``i < rows − 2``; a window is ``min(drawn, rows−1−i)``
    long (only the last can be cut) and the next starts at ``i + drawn``.
    """
    # SeedSequence takes non-negative words only; the sign is a word of its own
    rng = np.random.default_rng([abs(seed), int(seed < 0), epoch])
    out, i = [], 0
    while i < rows - 2:
        base = draw.bptt if rng.random() < draw.p_full else draw.bptt / 2
        drawn = max(draw.min_len, int(rng.normal(base, draw.sigma)))
        out.append(min(drawn, rows - 1 - i))
        i += drawn
    return out


class TrainWindows:
    """This rank's training windows (the project's Loader protocol: ``__iter__``, ``__len__``,
    ``set_epoch``).

    The rank's ``[rows, batch_size]`` block is moved to ``device`` once, so a step's data phase
    is a slice, not a copy from the host.
    """

    def __init__(
        self,
        stream: np.ndarray | torch.Tensor,
        batch_size: int,
        rank: int,
        world_size: int,
        *,
        seed: int,
        draw: WindowDraw = WindowDraw(),
        device: torch.device | None = None,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of size {world_size}")
        columns = batchify(_as_tensor(stream), batch_size * world_size)
        if len(columns) < 3:
            raise ValueError(
                f"{len(stream)} tokens make {len(columns)} rows in {batch_size * world_size} "
                "columns: too few for one window"
            )
        lo = rank * batch_size
        self.data = columns[:, lo : lo + batch_size].contiguous().to(device or "cpu")
        self.seed, self.epoch, self.draw = seed, 0, draw
        self._lengths: list[int] | None = None

    @property
    def rows(self) -> int:
        return len(self.data)

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self._lengths = epoch, None

    def lengths(self) -> list[int]:
        """This epoch's window lengths (the same on every rank)."""
        if self._lengths is None:
            self._lengths = draw_lengths(self.rows, self.seed, self.epoch, self.draw)
        return self._lengths

    def __len__(self) -> int:
        return len(self.lengths())

    def __iter__(self) -> Iterator[Window]:
        data, i = self.data, 0
        for length in self.lengths():
            yield Window(data[i : i + length], data[i + 1 : i + 1 + length], length)
            i += length


def eval_columns(columns: int, rank: int, world_size: int) -> range:
    """Rank ``rank``'s share of the ``columns`` evaluation columns: a contiguous block, the
    blocks' sizes differing by at most one (empty beyond the ``columns``-th rank)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world of size {world_size}")
    return range(rank * columns // world_size, (rank + 1) * columns // world_size)


class EvalWindows:
    """This rank's validation windows: fixed length ``bptt`` over its share of the reference's
    ``batch_size`` columns. Iterable any number of times; ``targets`` counts the target tokens
    this rank scores (the summed counts over ranks are ``batch_size · (rows − 1)``)."""

    def __init__(
        self,
        stream: np.ndarray | torch.Tensor,
        batch_size: int,
        rank: int,
        world_size: int,
        *,
        bptt: int = BPTT,
        device: torch.device | None = None,
    ) -> None:
        if bptt < 1:
            raise ValueError(f"bptt must be at least 1, not {bptt}")
        all_columns = batchify(_as_tensor(stream), batch_size)
        self.columns = eval_columns(batch_size, rank, world_size)
        block = all_columns[:, self.columns.start : self.columns.stop]
        self.data = block.contiguous().to(device or "cpu")
        self.bptt = bptt

    @property
    def targets(self) -> int:
        return max(len(self.data) - 1, 0) * len(self.columns)

    def __len__(self) -> int:
        return -(-max(len(self.data) - 1, 0) // self.bptt) if len(self.columns) else 0

    def __iter__(self) -> Iterator[Window]:
        if not len(self.columns):
            return
        data = self.data
        for i in range(0, len(data) - 1, self.bptt):
            length = min(self.bptt, len(data) - 1 - i)
            yield Window(data[i : i + length], data[i + 1 : i + 1 + length], length)
