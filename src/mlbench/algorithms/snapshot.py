"""Scheme state in a checkpoint: detached CPU copies and random generators as plain values.

A scheme's :meth:`~mlbench.algorithms.base.Algorithm.state_dict` is ``torch.save``-d per rank and
may be read with ``torch.load(..., weights_only=True)``, which accepts only tensors and plain
Python values (dicts, lists, tuples, str, int, float, bool, None). So a NumPy ``RandomState`` is
stored as a dict holding its key as an int64 tensor, and tensors are copied to the CPU: a copy,
never a view into a live buffer the next step overwrites, and loadable on a machine without the
run's accelerator. :func:`to_device` puts them back where the scheme computes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def cpu_copy(t: torch.Tensor | None) -> torch.Tensor | None:
    """A detached CPU copy of ``t`` (None stays None)."""
    if t is None:
        return None
    return t.detach().to("cpu", copy=True)


def restore(
    t: torch.Tensor,
    shape: tuple[int, ...],
    what: str,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """A checkpointed ``t`` on ``device`` as ``dtype`` (a new tensor, never the loaded one).

    A shape that does not fit is refused — the checkpoint was written by another model or scheme
    configuration, and silently broadcasting or truncating would corrupt the run.
    """
    if tuple(t.shape) != tuple(shape):
        raise ValueError(
            f"checkpointed {what} has shape {tuple(t.shape)}, this run's has {tuple(shape)} "
            f"(a checkpoint of another model or scheme configuration)"
        )
    return t.to(device=device, dtype=dtype, copy=True)


def numpy_rng_state(rs: np.random.RandomState) -> dict[str, Any]:
    """``rs.get_state()`` as plain values (the 624-word key as an int64 tensor)."""
    name, key, pos, has_gauss, cached = rs.get_state(legacy=True)
    return {
        "name": str(name),
        "key": torch.from_numpy(np.asarray(key, dtype=np.int64).copy()),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }


def load_numpy_rng_state(rs: np.random.RandomState, state: dict[str, Any]) -> None:
    """Inverse of :func:`numpy_rng_state`: ``rs`` continues exactly where the saved one was."""
    key = state["key"].numpy().astype(np.uint32)
    rs.set_state((state["name"], key, state["pos"], state["has_gauss"], state["cached_gaussian"]))
