"""In-memory batch loader: the whole shard lives in one tensor, batches are index gathers.

Why not ``torch.utils.data.DataLoader``: for these datasets a shard fits in memory, and per-sample
Python work plus loader worker processes would steal the very CPU cores being benchmarked (the
original MLBench's loaders did exactly that). Here the per-batch cost is one gather plus an optional
whole-batch transform, all as tensor ops, and it is charged to the ``data`` phase.

On a GPU the shard may live on the device (``inputs`` already there: CIFAR-10 is 150 MB of
uint8) and the transform run there after the copy (``device_transform``): the gather, the copy
and the augmentation then cost the host almost nothing. Both transforms draw from the same CPU
generator, after the shuffle, so where they run does not change the batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable

import torch

Batch = tuple[torch.Tensor, torch.Tensor]


@runtime_checkable
class Loader(Protocol):
    """What the training loop needs from a task's training data (DESIGN §4).

    ``len()`` is the *plan* (steps an epoch is expected to have, for progress and epoch
    fractions), not a promise: the loop runs the iterator to exhaustion. ``set_epoch`` is called
    before each epoch's iteration, so a streaming or token-batching loader can reshuffle from a
    seed shared by every rank. Batches are whatever the task's ``train_forward`` accepts.
    """

    def __iter__(self) -> Iterator[Any]: ...

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int) -> None: ...


class BatchLoader:
    def __init__(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool,
        drop_last: bool,
        seed: int,
        device: torch.device | None = None,
        transform: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
        device_transform: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    ) -> None:
        """``transform`` runs on the gathered batch where ``inputs`` lives, before the copy to
        ``device``; ``device_transform`` after it, on ``device``. Both get the loader's (CPU)
        generator."""
        if len(inputs) != len(targets):
            raise ValueError("inputs and targets differ in length")
        self.inputs, self.targets = inputs, targets
        self.batch_size = batch_size
        self.shuffle, self.drop_last = shuffle, drop_last
        self.device = device or torch.device("cpu")
        self.transform, self.device_transform = transform, device_transform
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.inputs)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Nothing to do: the shuffle generator runs on from one epoch to the next, so epoch
        ``e``'s order is the generator's ``e``-th permutation (seeded per rank)."""

    @property
    def num_samples(self) -> int:
        return len(self.inputs)

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.inputs)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else None
        if order is not None and order.device != self.inputs.device:  # a shard on the GPU
            order = order.to(self.inputs.device)
        for b in range(len(self)):
            lo, hi = b * self.batch_size, min(n, (b + 1) * self.batch_size)
            if order is None:
                x, y = self.inputs[lo:hi], self.targets[lo:hi]
            else:
                idx = order[lo:hi]
                x, y = self.inputs[idx], self.targets[idx]
            if self.transform is not None:
                x = self.transform(x, self.generator)
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            if self.device_transform is not None:
                x = self.device_transform(x, self.generator)
            yield x, y
