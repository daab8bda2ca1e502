"""Classification metrics from global sums.

Every metric is computed from counts/sums that are all-reduced across ranks first, so the result
equals the metric over the whole validation set, not an average of per-rank ratios.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from mlbench.dist import DistContext


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...]) -> list[int]:
    """Number of samples whose target is among the top-k logits, for each k."""
    maxk = min(max(ks), logits.shape[1])
    top = logits.topk(maxk, dim=1).indices
    hits = top.eq(targets.view(-1, 1))
    return [int(hits[:, : min(k, maxk)].any(dim=1).sum()) for k in ks]


def binary_counts(logits: torch.Tensor, targets: torch.Tensor) -> tuple[int, int, int, int]:
    """(true positives, false positives, false negatives, correct) at probability 0.5."""
    pred = logits > 0
    truth = targets > 0.5
    tp = int((pred & truth).sum())
    fp = int((pred & ~truth).sum())
    fn = int((~pred & truth).sum())
    return tp, fp, fn, int((pred == truth).sum())


def f1_from_counts(tp: float, fp: float, fn: float) -> float:
    denom = 2 * tp + fp + fn
    return 2 * tp / denom if denom > 0 else 0.0


def global_sums(values: list[float], dist: DistContext) -> list[float]:
    """Sum a few float64 counters over all ranks in one collective."""
    t = torch.tensor(values, dtype=torch.float64, device=dist.device)
    return [float(v) for v in dist.all_reduce_sum(t).cpu()]
