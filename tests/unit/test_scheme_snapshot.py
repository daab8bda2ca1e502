"""Scheme checkpoint state as plain values: what ``torch.load(weights_only=True)`` accepts.

The exact-resume property itself needs ranks and is in tests/dist/test_scheme_state.py; here,
without a process group, the pieces: a NumPy generator continues exactly after the round trip,
every registered scheme's ``state_dict()`` loads with ``weights_only=True`` and back, and a
memory that does not fit the model is refused.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import torch

from mlbench.algorithms.snapshot import load_numpy_rng_state, numpy_rng_state
from mlbench.dist import DistContext
from mlbench.registry import algorithm_names, get_algorithm
from mlbench.testing import scheme_config

ONE = DistContext(rank=0, world_size=1, local_rank=0, backend="gloo", device=torch.device("cpu"))


def _round_trip(obj: Any) -> Any:
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_numpy_generator_continues_exactly_after_a_weights_only_round_trip() -> None:
    rs = np.random.RandomState(3)
    rs.randint(1_000_000_000, size=5)
    rs.standard_normal()  # leaves a cached Gaussian: has_gauss = 1
    state = _round_trip(numpy_rng_state(rs))
    fresh = np.random.RandomState(0)
    load_numpy_rng_state(fresh, state)
    assert fresh.standard_normal() == rs.standard_normal()  # the cached one
    assert list(fresh.randint(1_000_000_000, size=4)) == list(rs.randint(1_000_000_000, size=4))


@pytest.mark.parametrize("name", algorithm_names())
def test_every_scheme_state_loads_with_weights_only(name: str) -> None:
    def build() -> Any:
        torch.manual_seed(0)
        algo = get_algorithm(name)(scheme_config(name), ONE)
        algo.setup(algo.wrap(torch.nn.Linear(6, 3)))
        return algo

    algo = build()
    algo.bytes_sent, algo.collectives = 123, 4  # what a run would have counted
    state = _round_trip(algo.state_dict())
    fresh = build()
    fresh.load_state_dict(state)
    assert (fresh.bytes_sent, fresh.collectives) == (123, 4)
    assert _round_trip(fresh.state_dict()).keys() == state.keys()


@pytest.mark.parametrize("name", ["topk", "signsgd"])
def test_a_memory_of_another_model_is_refused(name: str) -> None:
    algo = get_algorithm(name)(scheme_config(name), ONE)
    algo.setup(torch.nn.Linear(6, 3))  # 21 gradient entries
    state = {**algo.state_dict(), "memory": torch.zeros(20)}
    with pytest.raises(ValueError, match="shape"):
        algo.load_state_dict(state)
