"""Distributed corpus BLEU on 2 gloo ranks equals sacrebleu on the whole real newstest2014, and
the original's mean of per-batch BLEU does not."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import sacrebleu

from mlbench.data.seq2seq import length_balanced_shards
from mlbench.dist import DistContext
from mlbench.metrics.bleu import BleuScore, distributed_bleu
from mlbench.testing import run_ranks


def _references(real_wmt: Path) -> list[str]:
    return (real_wmt / "newstest2014.de").read_text(encoding="utf-8").split("\n")[:-1]


def _system(refs: list[str], seed: int = 5) -> list[str]:
    """A deterministic stand-in for a translation system: each reference with about a quarter
    of its words dropped and a neighbouring pair swapped now and then."""
    rng = random.Random(seed)
    out = []
    for ref in refs:
        words = [w for w in ref.split() if rng.random() > 0.25]
        if len(words) > 2 and rng.random() < 0.5:
            i = rng.randrange(len(words) - 1)
            words[i], words[i + 1] = words[i + 1], words[i]
        out.append(" ".join(words))
    return out


def _rank_bleu(ctx: DistContext, refs: list[str], hyps: list[str]) -> BleuScore:
    lengths = np.array([len(r.split()) for r in refs])
    mine = length_balanced_shards(lengths, ctx.world_size)[ctx.rank]
    return distributed_bleu([hyps[i] for i in mine], [refs[i] for i in mine], ctx)


def _whole(hyps: list[str], refs: list[str]) -> sacrebleu.BLEUScore:
    return sacrebleu.corpus_bleu(hyps, [refs], tokenize="intl", lowercase=True)


@pytest.mark.world_size(2)
def test_distributed_bleu_equals_corpus_bleu_on_newstest2014(real_wmt: Path) -> None:
    refs = _references(real_wmt)
    hyps = _system(refs)
    r0, r1 = run_ranks(_rank_bleu, 2, refs, hyps)
    whole = _whole(hyps, refs)
    assert r0 == r1  # every rank gets the same score
    assert abs(r0.score - whole.score) <= 1e-9
    assert r0.stats[:2] == [whole.sys_len, whole.ref_len]
    assert r0.stats[2:6] == whole.counts and r0.stats[6:] == whole.totals
    assert r0.signature == "nrefs:1|case:lc|eff:no|tok:intl|smooth:exp|version:" + (
        sacrebleu.__version__
    )
    assert 20 < r0.score < 60  # a realistic, not degenerate, score


def test_mean_of_per_batch_bleu_is_the_originals_bug(real_wmt: Path) -> None:
    refs = _references(real_wmt)
    hyps = _system(refs)
    whole = _whole(hyps, refs).score
    order = sorted(range(len(refs)), key=lambda i: len(refs[i].split()))
    batches = [order[i : i + 64] for i in range(0, len(order), 64)]
    per_batch = [
        _whole([hyps[i] for i in b], [refs[i] for i in b]).score for b in batches
    ]  # what the original averaged
    assert abs(float(np.mean(per_batch)) - whole) > 0.5
