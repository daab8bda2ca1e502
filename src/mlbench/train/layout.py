"""``train.channels_last``: the model's 4-D weights and every 4-D input batch in NHWC order.

Why: on tensor-core GPUs cuDNN's convolutions run natively in NHWC; fed NCHW, every convolution
pays a layout transpose (ResNet-50 in bf16 on an A100/H100 is ~1.2-1.5x faster channels-last).
It is a memory layout, not other math (the convolution algorithms may sum in another order), so
the key is open. The batch conversion runs inside the loop's ``data`` lap (the loader's
iterator is wrapped), so its cost is counted where the data path's is.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch


def channels_last_model(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` with its 4-D parameters and buffers channels-last, in place (the same
    Parameter objects: schemes and optimizers built after see the same tensors; gradients and
    momentum buffers follow the parameters' layout)."""
    # Module.to(memory_format=...) is documented but missing from torch's typed overloads
    return module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]


def to_channels_last(batch: Any) -> Any:
    """``batch`` with every 4-D tensor (top level, or in a plain tuple/list) channels-last;
    anything else (labels, token ids, a task's own batch type) unchanged."""
    if isinstance(batch, torch.Tensor):
        return batch.contiguous(memory_format=torch.channels_last) if batch.dim() == 4 else batch
    if type(batch) in (tuple, list):
        return type(batch)(to_channels_last(b) for b in batch)
    return batch


def channels_last_batches(batches: Iterator[Any]) -> Iterator[Any]:
    """The loader's batches, converted by :func:`to_channels_last` as they are drawn."""
    for batch in batches:
        yield to_channels_last(batch)
