"""Disjoint per-rank shards of a dataset.

Training shards have equal size (the remainder is dropped) so every rank runs the same number of
steps per epoch — a synchronous collective per step requires it. Validation shards cover every
sample (sizes may differ by one) so the all-reduced metrics are exact over the whole split.
"""

from __future__ import annotations

import numpy as np


def shard_indices(n: int, rank: int, world_size: int, *, seed: int, equal: bool) -> np.ndarray:
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world of size {world_size}")
    order = np.random.default_rng(seed).permutation(n) if seed >= 0 else np.arange(n)
    if equal:
        per = n // world_size
        return np.sort(order[rank * per : (rank + 1) * per])
    return np.sort(np.array_split(order, world_size)[rank])
