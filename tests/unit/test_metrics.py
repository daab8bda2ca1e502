"""mlbench.metrics.classification: counts that are summed across ranks before any ratio."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix, f1_score

from mlbench.dist import DistContext
from mlbench.metrics.classification import (
    binary_counts,
    f1_from_counts,
    global_sums,
    topk_correct,
)


def test_topk_correct_hand_example():
    logits = torch.tensor(
        [
            [0.1, 0.5, 0.2, 0.0],  # ranking 1,2,0,3
            [0.9, 0.1, 0.3, 0.2],  # ranking 0,2,3,1
            [0.0, 0.1, 0.2, 0.3],  # ranking 3,2,1,0
        ]
    )
    targets = torch.tensor([1, 2, 0])
    assert topk_correct(logits, targets, (1, 2, 3, 4)) == [1, 2, 2, 3]


def test_topk_correct_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 10, generator=g)
    targets = torch.randint(0, 10, (500,), generator=g)
    ranks = (-logits.numpy()).argsort(axis=1)  # best first
    position = (ranks == targets.numpy()[:, None]).argmax(axis=1)
    expected = [int((position < k).sum()) for k in (1, 3, 5)]
    assert topk_correct(logits, targets, (1, 3, 5)) == expected
    assert 0 < expected[0] < expected[1] < expected[2] < 500


def test_topk_larger_than_classes_counts_everything():
    logits = torch.randn(6, 3)
    targets = torch.tensor([0, 1, 2, 0, 1, 2])
    top1, top5 = topk_correct(logits, targets, (1, 5))
    assert top5 == 6
    assert top1 == int((logits.argmax(1) == targets).sum())


def test_binary_counts_vs_sklearn():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(1000, generator=g)
    targets = (torch.rand(1000, generator=g) < 0.4).float()
    tp, fp, fn, correct = binary_counts(logits, targets)
    pred = (logits > 0).numpy().astype(int)
    tn_s, fp_s, fn_s, tp_s = confusion_matrix(targets.numpy().astype(int), pred).ravel()
    assert (tp, fp, fn, correct) == (tp_s, fp_s, fn_s, tp_s + tn_s)


def test_binary_counts_threshold_is_probability_half():
    # sigmoid(0) = 0.5 is not a positive prediction; any positive logit is
    logits = torch.tensor([0.0, 1e-6, -1e-6, 0.0])
    targets = torch.tensor([1.0, 1.0, 0.0, 0.0])
    assert binary_counts(logits, targets) == (1, 0, 1, 3)


@pytest.mark.parametrize("seed", range(5))
def test_f1_from_counts_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    p = np.where(rng.random(300) < 0.7, y, 1 - y)
    tp = int(((p == 1) & (y == 1)).sum())
    fp = int(((p == 1) & (y == 0)).sum())
    fn = int(((p == 0) & (y == 1)).sum())
    assert f1_from_counts(tp, fp, fn) == pytest.approx(f1_score(y, p))


def test_f1_via_binary_counts_matches_sklearn():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(777, generator=g)
    targets = (torch.rand(777, generator=g) < 0.5).float()
    tp, fp, fn, _ = binary_counts(logits, targets)
    expected = f1_score(targets.numpy().astype(int), (logits > 0).numpy().astype(int))
    assert f1_from_counts(tp, fp, fn) == pytest.approx(expected)


def test_f1_from_summed_counts_is_global_not_averaged():
    # two "ranks" with very different f1: the global f1 comes from the summed counts
    a, b = (10, 0, 0), (1, 5, 5)
    summed = tuple(x + y for x, y in zip(a, b, strict=True))
    assert f1_from_counts(*summed) == pytest.approx(2 * 11 / (2 * 11 + 5 + 5))
    mean_of_ratios = (f1_from_counts(*a) + f1_from_counts(*b)) / 2
    assert f1_from_counts(*summed) != pytest.approx(mean_of_ratios)


def test_f1_degenerate():
    assert f1_from_counts(0, 0, 0) == 0.0
    assert f1_from_counts(0, 3, 4) == 0.0
    assert f1_from_counts(5, 0, 0) == 1.0


def test_global_sums_single_rank():
    ctx = DistContext(
        rank=0, world_size=1, local_rank=0, backend="gloo", device=torch.device("cpu")
    )
    out = global_sums([1.5, 2, 1e12 + 1], ctx)
    assert out == [1.5, 2.0, 1e12 + 1]  # float64: large counters stay exact
    assert all(type(v) is float for v in out)
