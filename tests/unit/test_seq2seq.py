"""Translation batchers and the evaluation split on real sentence pairs (Multi30k train, word
ids of the real sentences: the batchers only see lengths and ids) and real newstest2014."""

from __future__ import annotations

import gzip
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from mlbench.data.loader import Loader
from mlbench.data.seq2seq import (
    SentenceBatches,
    TokenBatches,
    eval_batches,
    length_balanced_shards,
    token_batches,
)
from mlbench.data.wmt import BOS, EOS, PAD, Pairs, Ragged
from mlbench.errors import ConfigError


def _lines(path: Path) -> list[str]:
    return gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")[:-1]


@pytest.fixture(scope="module")
def pairs(real_wmt: Path) -> Pairs:
    index: dict[str, int] = {}

    def ids(lines: list[str]) -> Ragged:
        return Ragged.from_lists(
            [[index.setdefault(w, len(index) + 4) for w in s.split()] for s in lines]
        )

    return Pairs(
        ids(_lines(real_wmt / "multi30k/train.en.gz")),
        ids(_lines(real_wmt / "multi30k/train.de.gz")),
    )


def _epoch(loaders: list[SentenceBatches] | list[TokenBatches], epoch: int) -> list[list]:
    out = []
    for loader in loaders:
        loader.set_epoch(epoch)
        out.append(list(loader))
    return out


def _rows(batch) -> list[int]:  # type: ignore[no-untyped-def]
    return [int(x) for x in batch]


def test_pair_batch_layout(pairs: Pairs) -> None:
    loader = SentenceBatches(pairs, 8, rank=0, world_size=1, seed=1, bucket=False)
    batch = next(iter(loader))
    idx = loader.plan(0)[0, 0, 0]
    for row, i in enumerate(idx):
        src, tgt = pairs.src.tolist(int(i)), pairs.tgt.tolist(int(i))
        n, m = len(src), len(tgt)
        assert int(batch.src_len[row]) == n + 1
        assert batch.src[row, : n + 1].tolist() == [*src, EOS]  # no BOS on the source
        assert batch.tgt_in[row, : m + 1].tolist() == [BOS, *tgt]
        assert batch.tgt_out[row, : m + 1].tolist() == [*tgt, EOS]
        assert (batch.src[row, n + 1 :] == PAD).all() and (batch.tgt_out[row, m + 1 :] == PAD).all()
        assert (batch.tgt_in[row, m + 1 :] == PAD).all()
    assert batch.src.dtype == torch.long and batch.tgt_in.shape == batch.tgt_out.shape
    assert batch.src.shape[1] == int(batch.src_len.max())


@pytest.mark.parametrize("bucket", [True, False])
def test_sentence_batches_split_a_global_step_across_ranks(pairs: Pairs, bucket: bool) -> None:
    k, u, b = 2, 3, 16
    loaders = [
        SentenceBatches(
            pairs, b, rank=r, world_size=k, accumulate=u, seed=7, max_len=20, bucket=bucket
        )
        for r in range(k)
    ]
    assert isinstance(loaders[0], Loader)
    e0 = _epoch(loaders, 0)
    assert len(e0[0]) == len(e0[1]) == len(loaders[0]) and len(e0[0]) % u == 0
    plan = loaders[0].plan(0)
    assert np.array_equal(plan, loaders[1].plan(0))  # the same plan on every rank
    flat = plan.reshape(-1)
    assert len(np.unique(flat)) == len(flat)  # disjoint across ranks and steps
    kept = loaders[0].keep
    assert len(flat) == len(kept) // (k * u * b) * (k * u * b) and len(kept) - len(flat) < k * u * b
    assert set(flat.tolist()) <= set(kept.tolist())
    too_long = (pairs.src.lengths > 20) | (pairs.tgt.lengths > 20)
    assert too_long.any() and not too_long[flat].any()  # the length limit applied
    for r in range(k):  # rank r's i-th micro-batch holds plan[step, m, r]
        got = [int(x) for x in e0[r][4].src_len - 1]
        want = pairs.src.lengths[plan[4 // u, 4 % u, r]].tolist()
        assert got == want
    other = loaders[0].plan(1)
    assert not np.array_equal(plan, other)  # a new order every epoch
    assert np.array_equal(np.sort(other.reshape(-1)), np.sort(flat)) or len(kept) % (k * u * b)


def test_bucketing_cuts_padding(pairs: Pairs) -> None:
    def padding(bucket: bool) -> int:
        loader = SentenceBatches(pairs, 32, rank=0, world_size=2, seed=3, bucket=bucket)
        return sum(int(x.src.numel() - x.src_len.sum()) for x in loader)

    assert padding(True) < 0.5 * padding(False)


def test_token_batches_budget_ranks_and_epochs(pairs: Pairs) -> None:
    k, u, budget = 2, 2, 600
    loaders = [
        TokenBatches(pairs, budget, rank=r, world_size=k, accumulate=u, seed=43) for r in range(k)
    ]
    e0 = _epoch(loaders, 0)
    assert len(e0[0]) == len(e0[1]) == len(loaders[0]) > 0  # len is exact
    for batches in e0:
        for x in batches:
            assert x.src.shape[0] * max(x.src.shape[1], x.tgt_in.shape[1]) <= budget
    p0, p1 = loaders[0].plan(0), loaders[1].plan(0)
    assert all(np.array_equal(a, c) for a, c in zip(p0[0], p1[0], strict=True))  # same on ranks
    seen = np.concatenate([np.concatenate(p) for p in p0])
    assert len(np.unique(seen)) == len(seen)  # disjoint
    left_out = loaders[0].n_batches - sum(len(p) for p in p0)
    assert 0 <= left_out < k * u
    assert len(seen) > 0.97 * len(pairs)
    q0 = loaders[0].plan(1)[0]
    assert len(q0) == len(p0[0])
    assert [a.tolist() for a in q0] != [a.tolist() for a in p0[0]]  # rebuilt and reshuffled
    # batches are cut from the length-sorted list: their length ranges do not interleave
    spans = sorted(
        (int(m.min()), int(m.max()))
        for m in (np.maximum(pairs.src.lengths[x], pairs.tgt.lengths[x]) for p in p0 for x in p)
    )
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))


def test_token_batches_are_greedy_and_reject_an_impossible_budget(pairs: Pairs) -> None:
    lens = np.array([3, 3, 4, 4, 4, 10, 10, 30])
    ranges = token_batches(lens, 12)
    assert ranges == [(0, 3), (3, 5), (5, 6), (6, 7), (7, 8)]
    for lo, hi in ranges:
        assert (hi - lo) * lens[hi - 1] <= 12 or hi - lo == 1
        if hi < len(lens):
            assert (hi + 1 - lo) * lens[hi] > 12  # one more would not fit
    assert [hi for _, hi in ranges][-1] == len(lens)
    with pytest.raises(ConfigError, match="micro-batch holds only 20"):
        TokenBatches(pairs, 20, rank=0, world_size=1, seed=0)


def test_length_balanced_shards_of_newstest2014(real_wmt: Path) -> None:
    lines = (real_wmt / "newstest2014.en").read_text(encoding="utf-8").split("\n")[:-1]
    lengths = np.array([len(s.split()) for s in lines])
    for k in (2, 3, 8):
        shards = length_balanced_shards(lengths, k)
        joined = np.concatenate(shards)
        assert sorted(joined.tolist()) == list(range(len(lines)))  # disjoint and complete
        sizes = [len(s) for s in shards]
        totals = [int(lengths[s].sum()) for s in shards]
        assert max(sizes) - min(sizes) <= 1
        assert max(totals) - min(totals) <= lengths.max()
    src = Ragged.from_lists([[5] * n for n in lengths])
    shard = length_balanced_shards(lengths, 2)[1]
    got = list(eval_batches(src, shard, 64))
    order = np.concatenate([b.positions for b in got])
    assert sorted(order.tolist()) == shard.tolist()
    assert (np.diff(lengths[order]) <= 0).all()  # longest first
    first = got[0]
    assert (
        first.src.shape == (64, int(first.src_len.max()))
        and (first.src_len == lengths[first.positions] + 1).all()
    )
