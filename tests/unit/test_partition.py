"""mlbench.data.partition: per-rank shards."""

from __future__ import annotations

import numpy as np
import pytest

from mlbench.data.partition import shard_indices


def _shards(n, k, *, seed=3, equal=True):
    return [shard_indices(n, r, k, seed=seed, equal=equal) for r in range(k)]


@pytest.mark.parametrize(("n", "k"), [(103, 4), (100, 4), (7, 3), (10, 1), (5, 8)])
def test_equal_shards_disjoint_equal_size_drop_remainder(n, k):
    shards = _shards(n, k)
    per = n // k
    assert [len(s) for s in shards] == [per] * k
    union = np.concatenate(shards)
    assert len(np.unique(union)) == len(union) == per * k  # disjoint
    assert union.min(initial=0) >= 0 and union.max(initial=0) < n
    assert n - len(union) == n % k  # exactly the remainder is dropped


@pytest.mark.parametrize(("n", "k"), [(103, 4), (10, 3), (5, 8), (1, 2)])
def test_unequal_shards_cover_everything_once(n, k):
    shards = _shards(n, k, equal=False)
    union = np.sort(np.concatenate(shards))
    np.testing.assert_array_equal(union, np.arange(n))
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1


def test_shards_are_sorted_indices():
    for s in _shards(50, 3) + _shards(50, 3, equal=False):
        np.testing.assert_array_equal(s, np.sort(s))
        assert s.dtype.kind == "i"


def test_deterministic_by_seed():
    a = _shards(200, 4, seed=1)
    b = _shards(200, 4, seed=1)
    c = _shards(200, 4, seed=2)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_shards_are_random_not_contiguous():
    s = shard_indices(1000, 0, 4, seed=0, equal=True)
    assert s.max() - s.min() > 500  # a contiguous block of 250 would span 249


def test_negative_seed_gives_contiguous_blocks():
    np.testing.assert_array_equal(shard_indices(10, 1, 3, seed=-1, equal=True), [3, 4, 5])
    np.testing.assert_array_equal(shard_indices(10, 0, 3, seed=-1, equal=False), [0, 1, 2, 3])


def test_equal_and_unequal_use_the_same_permutation_for_world_one():
    np.testing.assert_array_equal(
        shard_indices(9, 0, 1, seed=5, equal=True), shard_indices(9, 0, 1, seed=5, equal=False)
    )
    np.testing.assert_array_equal(shard_indices(9, 0, 1, seed=5, equal=True), np.arange(9))


@pytest.mark.parametrize(("rank", "world"), [(-1, 2), (2, 2), (0, 0)])
def test_rank_outside_world(rank, world):
    with pytest.raises(ValueError, match="rank"):
        shard_indices(10, rank, world, seed=0, equal=True)
