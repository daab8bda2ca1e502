"""mlbench.data.loader: the in-memory batch loader."""

from __future__ import annotations

import pytest
import torch

from mlbench.data.loader import BatchLoader


def _data(n):
    targets = torch.arange(n)
    inputs = (targets * 10).float().view(n, 1).repeat(1, 2)  # row i holds 10*i
    return inputs, targets


@pytest.mark.parametrize(
    ("n", "bs", "drop_last", "sizes"),
    [
        (10, 3, True, [3, 3, 3]),
        (10, 3, False, [3, 3, 3, 1]),
        (9, 3, True, [3, 3, 3]),
        (9, 3, False, [3, 3, 3]),
        (2, 3, True, []),
        (2, 3, False, [2]),
    ],
)
def test_len_and_batch_sizes(n, bs, drop_last, sizes):
    for shuffle in (False, True):
        loader = BatchLoader(*_data(n), bs, shuffle=shuffle, drop_last=drop_last, seed=0)
        assert len(loader) == len(sizes)
        assert [len(y) for _, y in loader] == sizes
        assert loader.num_samples == n


def test_unshuffled_order_is_the_data_order():
    loader = BatchLoader(*_data(7), 3, shuffle=False, drop_last=False, seed=0)
    ys = [y.tolist() for _, y in loader]
    assert ys == [[0, 1, 2], [3, 4, 5], [6]]
    assert [y.tolist() for _, y in loader] == ys  # same every epoch


def test_shuffle_is_a_permutation_per_epoch_and_differs_across_epochs():
    n = 50
    loader = BatchLoader(*_data(n), 8, shuffle=True, drop_last=False, seed=1)
    epochs = []
    for _ in range(3):
        order = torch.cat([y for _, y in loader])
        assert sorted(order.tolist()) == list(range(n))
        epochs.append(order.tolist())
    assert epochs[0] != list(range(n))
    assert epochs[0] != epochs[1] != epochs[2]


def test_shuffle_with_drop_last_drops_different_samples():
    loader = BatchLoader(*_data(10), 4, shuffle=True, drop_last=True, seed=0)
    kept = []
    for _ in range(6):
        ys = torch.cat([y for _, y in loader]).tolist()
        assert len(ys) == 8 and len(set(ys)) == 8
        kept.append(frozenset(ys))
    assert len(set(kept)) > 1


def test_inputs_stay_aligned_with_targets():
    loader = BatchLoader(*_data(30), 7, shuffle=True, drop_last=False, seed=5)
    for x, y in loader:
        assert torch.equal(x[:, 0], (y * 10).float())
        assert torch.equal(x[:, 1], (y * 10).float())


def test_seed_makes_order_reproducible():
    a = BatchLoader(*_data(40), 5, shuffle=True, drop_last=False, seed=3)
    b = BatchLoader(*_data(40), 5, shuffle=True, drop_last=False, seed=3)
    c = BatchLoader(*_data(40), 5, shuffle=True, drop_last=False, seed=4)
    order = lambda loader: torch.cat([y for _, y in loader]).tolist()  # noqa: E731
    assert order(a) == order(b)
    assert order(a) != order(c)


def test_transform_applied_to_every_batch_with_the_loader_generator():
    calls = []

    def transform(x, gen):
        calls.append((x.clone(), gen))
        return x * 2 + 1

    loader = BatchLoader(*_data(5), 2, shuffle=False, drop_last=False, seed=0, transform=transform)
    batches = list(loader)
    assert len(calls) == 3
    assert all(gen is loader.generator for _, gen in calls)
    for (x, y), (seen, _) in zip(batches, calls, strict=True):
        assert torch.equal(seen[:, 0], (y * 10).float())  # transform sees the raw batch
        assert torch.equal(x, seen * 2 + 1)
    # targets are never transformed
    assert torch.cat([y for _, y in batches]).tolist() == [0, 1, 2, 3, 4]


def test_transform_does_not_touch_stored_inputs():
    inputs, targets = _data(4)
    before = inputs.clone()

    def inplace(x, gen):
        return x.mul_(0)

    loader = BatchLoader(
        inputs, targets, 4, shuffle=True, drop_last=False, seed=0, transform=inplace
    )
    list(loader)
    assert torch.equal(inputs, before)  # shuffled batches are gathered copies


def test_batches_on_requested_device():
    loader = BatchLoader(
        *_data(4), 2, shuffle=False, drop_last=False, seed=0, device=torch.device("cpu")
    )
    for x, y in loader:
        assert x.device.type == "cpu" and y.device.type == "cpu"


def test_length_mismatch():
    with pytest.raises(ValueError, match="length"):
        BatchLoader(torch.zeros(3, 2), torch.zeros(4), 2, shuffle=False, drop_last=False, seed=0)
