"""Batches of sentence pairs for the translation tasks (4a, 4b), and the evaluation split.

Both training batchers implement the :class:`~mlbench.data.loader.Loader` protocol and share the
rules the training loop relies on:

* **Every rank yields the same number of micro-batches per epoch**, a multiple of
  ``accumulate`` — the loop takes ``train.accumulate`` micro-batches per step and every rank must
  take the same number of steps (a rank with one more micro-batch would wait forever in the
  all-reduce).
* **The order is drawn from ``(seed, epoch)``, identical on every rank**, without communication:
  ranks compute the same global batch list and each takes its own slots.
* Nothing is computed and then thrown away (the original computed an epoch's leftover
  micro-batches, then discarded them): what does not fill a whole global step is left out of that
  epoch *before* batching, and since the order is redrawn every epoch a different remainder is left
  out each time.

``SentenceBatches`` (4a, MLPerf's GNMT sampler): a global step is ``k`` ranks × ``u`` micro-batches
× ``b`` sentences. Optional bucketing as MLPerf's: shards of 80 global steps sorted by length, so a
step's sentences have similar lengths (less padding), then the steps shuffled.

``TokenBatches`` (4b): the pairs sorted by length (ties in a random order each epoch), cut into
batches that are full when sentences × padded length would exceed the per-micro-batch token
budget, the batch list shuffled and dealt out. The original built this list once, so every epoch
saw the same batches in the same order; here it is rebuilt every epoch.

Evaluation: :func:`length_balanced_shards` splits the test set so every rank decodes about the same
number of tokens (beam search time grows with length), :func:`eval_batches` yields a rank's share
sorted by length with the original indices, so hypotheses can be put back in corpus order.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch

from mlbench.data.wmt import BOS, EOS, PAD, Pairs, Ragged
from mlbench.errors import ConfigError

#: MLPerf's GNMT sampler sorts shards of this many global batches by length
BUCKET_STEPS = 80


class PairBatch(NamedTuple):
    """One micro-batch, already on the device."""

    src: torch.Tensor  #: [B, S] long, PAD-padded, source ids + EOS (no BOS)
    src_len: torch.Tensor  #: [B] long, true lengths (incl. EOS)
    tgt_in: torch.Tensor  #: [B, T] long: BOS + target ids, PAD-padded
    tgt_out: torch.Tensor  #: [B, T] long: target ids + EOS, PAD-padded


class EvalBatch(NamedTuple):
    positions: np.ndarray  #: where these sentences are in the test set
    src: torch.Tensor  #: [B, S] long, source ids + EOS, PAD-padded
    src_len: torch.Tensor  #: [B] long, incl. EOS


def _pad(seqs: Ragged, idx: np.ndarray, lead: int | None, tail: int | None) -> np.ndarray:
    """Rows ``[lead] + ids + [tail]`` of the given sentences, PAD-padded to the longest: one
    vectorised gather (a Python loop over rows costs ~0.1 ms a sentence, too slow for token
    batches of hundreds of sentences)."""
    extra = (lead is not None) + (tail is not None)
    idx = np.asarray(idx, dtype=np.int64)
    lengths = seqs.lengths[idx]
    out = np.full((len(idx), int(lengths.max(initial=0)) + extra), PAD, dtype=np.int64)
    start = 0
    if lead is not None:
        out[:, 0] = lead
        start = 1
    rows = np.repeat(np.arange(len(idx)), lengths)
    within = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out[rows, start + within] = seqs.ids[np.repeat(seqs.offsets[idx], lengths) + within]
    if tail is not None:
        out[np.arange(len(idx)), start + lengths] = tail
    return out


def collate(pairs: Pairs, idx: np.ndarray, device: torch.device) -> PairBatch:
    src = torch.from_numpy(_pad(pairs.src, idx, None, EOS))
    src_len = torch.from_numpy(pairs.src.lengths[idx].astype(np.int64) + 1)
    tgt_in = torch.from_numpy(_pad(pairs.tgt, idx, BOS, None))
    tgt_out = torch.from_numpy(_pad(pairs.tgt, idx, None, EOS))
    nb = device.type == "cuda"
    return PairBatch(
        src.to(device, non_blocking=nb),
        src_len.to(device, non_blocking=nb),
        tgt_in.to(device, non_blocking=nb),
        tgt_out.to(device, non_blocking=nb),
    )


def _check_rank(rank: int, world_size: int, accumulate: int) -> None:
    if not 0 <= rank < world_size or accumulate < 1:
        raise ValueError(f"rank {rank} of {world_size}, accumulate {accumulate}")


def within_length(pairs: Pairs, max_len: int | None) -> np.ndarray:
    """Indices of the pairs whose both sides have at most ``max_len`` tokens (before BOS/EOS)."""
    n = len(pairs)
    if max_len is None:
        return np.arange(n)
    keep = (pairs.src.lengths <= max_len) & (pairs.tgt.lengths <= max_len)
    return np.flatnonzero(keep)


class SentenceBatches:
    """Micro-batches of ``batch_size`` sentences per rank (task 4a); see the module docstring.

    ``max_len`` drops training pairs with a side longer than that many tokens (MLBENCH.md: 75;
    MLPerf used 50); ``lengths`` for bucketing are source + target tokens.
    """

    def __init__(
        self,
        pairs: Pairs,
        batch_size: int,
        *,
        rank: int,
        world_size: int,
        accumulate: int = 1,
        seed: int,
        max_len: int | None = 75,
        bucket: bool = True,
        device: torch.device | None = None,
    ) -> None:
        _check_rank(rank, world_size, accumulate)
        self.pairs = pairs
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.accumulate, self.seed, self.bucket = accumulate, seed, bucket
        self.device = device or torch.device("cpu")
        self.keep = within_length(pairs, max_len)
        self.step_size = batch_size * world_size * accumulate
        if len(self.keep) < self.step_size:
            raise ConfigError(
                f"{len(self.keep)} training pairs cannot fill one global step of "
                f"{self.step_size} sentences ({world_size} ranks × {accumulate} × {batch_size})"
            )
        self.lengths = pairs.src.lengths[self.keep] + pairs.tgt.lengths[self.keep]
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.keep) // self.step_size * self.accumulate

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def plan(self, epoch: int) -> np.ndarray:
        """Every rank's micro-batches of ``epoch`` as pair indices: ``[steps, u, k, b]``."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.keep))
        steps = len(self.keep) // self.step_size
        order = order[: steps * self.step_size]  # the remainder: left out of this epoch
        if self.bucket:
            shard = self.step_size * BUCKET_STEPS
            parts = []
            for lo in range(0, len(order), shard):
                part = order[lo : lo + shard]
                parts.append(part[np.argsort(self.lengths[part], kind="stable")])
            order = np.concatenate(parts).reshape(steps, self.step_size)
            order = order[rng.permutation(steps)]
        grid = order.reshape(steps, self.accumulate, self.world_size, self.batch_size)
        keep: np.ndarray = self.keep[grid]
        return keep

    def __iter__(self) -> Iterator[PairBatch]:
        mine = self.plan(self.epoch)[:, :, self.rank, :]
        for micro in mine.reshape(-1, self.batch_size):
            yield collate(self.pairs, micro, self.device)


def token_batches(padded: np.ndarray, max_tokens: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` ranges of the non-decreasing ``padded`` lengths, each as long as it can be
    without ``(hi - lo) * padded[hi - 1]`` exceeding ``max_tokens`` (greedy, left to right)."""
    out = []
    n, lo = len(padded), 0
    lens = padded.tolist()
    while lo < n:
        # the largest hi with (hi - lo) * lens[hi - 1] <= max_tokens: monotone in hi
        a, b = lo + 1, n
        while a < b:
            mid = (a + b + 1) // 2
            if (mid - lo) * lens[mid - 1] <= max_tokens:
                a = mid
            else:
                b = mid - 1
        out.append((lo, a))
        lo = a
    return out


class TokenBatches:
    """Micro-batches of at most ``max_tokens`` padded tokens (task 4b); see the module docstring.

    A batch's size is ``sentences × max(source + EOS, BOS + target)`` over its sentences. The
    boundaries depend only on the sorted length sequence, so every epoch has the same number of
    batches (``len`` is exact) while their contents change with the tie order. Batches that do not
    fill a whole global step (``k × u`` micro-batches) are left out of that epoch; they are a
    different random set each epoch.
    """

    def __init__(
        self,
        pairs: Pairs,
        max_tokens: int,
        *,
        rank: int,
        world_size: int,
        accumulate: int = 1,
        seed: int,
        max_len: int | None = None,
        device: torch.device | None = None,
    ) -> None:
        _check_rank(rank, world_size, accumulate)
        self.pairs, self.max_tokens = pairs, max_tokens
        self.rank, self.world_size, self.accumulate, self.seed = rank, world_size, accumulate, seed
        self.device = device or torch.device("cpu")
        self.keep = within_length(pairs, max_len)
        self.padded = np.maximum(pairs.src.lengths[self.keep], pairs.tgt.lengths[self.keep]) + 1
        longest = int(self.padded.max(initial=0))
        if longest > max_tokens:
            raise ConfigError(
                f"a training pair is {longest} tokens long but a micro-batch holds only "
                f"{max_tokens}: raise the token budget or set a length limit"
            )
        self.n_batches = len(token_batches(np.sort(self.padded), max_tokens))
        self.slots = world_size * accumulate
        if self.n_batches < self.slots:
            raise ConfigError(
                f"{len(self.keep)} training pairs make {self.n_batches} batches of "
                f"{max_tokens} tokens, fewer than one global step ({self.slots})"
            )
        self.epoch = 0

    def __len__(self) -> int:
        return self.n_batches // self.slots * self.accumulate

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def plan(self, epoch: int) -> list[list[np.ndarray]]:
        """Every rank's micro-batches of ``epoch`` (pair indices): ``plan[rank][i]``."""
        rng = np.random.default_rng([self.seed, epoch])
        ties = rng.permutation(len(self.keep))
        order = ties[np.argsort(self.padded[ties], kind="stable")]
        ranges = token_batches(self.padded[order], self.max_tokens)
        assert len(ranges) == self.n_batches
        chosen = rng.permutation(len(ranges))[: len(ranges) // self.slots * self.slots]
        # slot j of a step goes to rank j % k: consecutive micro-batches of a step are dealt out
        per_rank: list[list[np.ndarray]] = [[] for _ in range(self.world_size)]
        for j, b in enumerate(chosen):
            lo, hi = ranges[b]
            per_rank[j % self.world_size].append(self.keep[order[lo:hi]])
        return per_rank

    def __iter__(self) -> Iterator[PairBatch]:
        for micro in self.plan(self.epoch)[self.rank]:
            yield collate(self.pairs, micro, self.device)


def length_balanced_shards(lengths: np.ndarray, world_size: int) -> list[np.ndarray]:
    """Split sentence indices across ranks so each decodes about the same number of tokens.

    Sorted by decreasing length and dealt in a snake (0, 1, …, k−1, k−1, …, 0, 0, …): counts
    differ by at most one and the totals by at most the longest sentence. Deterministic, so every
    rank computes the same split; each shard is returned sorted by index.
    """
    order = np.argsort(-np.asarray(lengths), kind="stable")
    lap = np.concatenate([np.arange(world_size), np.arange(world_size)[::-1]])
    owner = np.resize(lap, len(order))
    return [np.sort(order[owner == r]) for r in range(world_size)]


def eval_batches(
    src: Ragged, indices: np.ndarray, batch_size: int, device: torch.device | None = None
) -> Iterator[EvalBatch]:
    """A rank's test sentences, longest first, in batches of ``batch_size`` (similar lengths
    batched together pad little), each with the sentences' original indices."""
    device = device or torch.device("cpu")
    indices = np.asarray(indices)
    ordered = indices[np.argsort(-src.lengths[indices], kind="stable")]
    for lo in range(0, len(ordered), batch_size):
        idx = ordered[lo : lo + batch_size]
        ids = torch.from_numpy(_pad(src, idx, None, EOS))
        lens = torch.from_numpy(src.lengths[idx].astype(np.int64) + 1)
        yield EvalBatch(idx, ids.to(device), lens.to(device))
