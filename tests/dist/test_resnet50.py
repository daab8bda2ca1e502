"""ResNet-50 v1.5 (task 1b's model, built by the task) on 2 gloo ranks at 64 px: forward and
backward on each rank's own images, the all-reduce scheme's reduced gradient identical on both
ranks and equal to the mean of the two local gradients, and the weights equal after a step."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from mlbench.dist import DistContext
from mlbench.testing import run_ranks, scheme_config

PER_RANK, SIZE, CLASSES = 4, 64, 10


def _flat(grads: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in grads])


def _rank(ctx: DistContext) -> dict[str, Any]:
    from mlbench.algorithms.allreduce import AllReduce
    from mlbench.runs import resolve_config

    task, cfg = resolve_config("imagenet-resnet50", overrides=["data.batch_size=4"])
    torch.manual_seed(0 if ctx.rank == 0 else 1)  # different inits: setup() must broadcast
    model = task.build_model(cfg, {"classes": CLASSES})
    optimizer = task.build_optimizer(cfg, model, ctx.world_size)  # type: ignore[attr-defined]
    algo = AllReduce(scheme_config("allreduce", mode="gradients", bucket_mb=25.0), ctx)
    algo.setup(model)
    g = torch.Generator().manual_seed(7)  # the same global batch on both ranks; each its slice
    x = torch.randn(ctx.world_size * PER_RANK, 3, SIZE, SIZE, generator=g)
    y = torch.randint(0, CLASSES, (ctx.world_size * PER_RANK,), generator=g)
    lo = ctx.rank * PER_RANK
    model.train()
    algo.zero_grad(optimizer)
    loss = torch.nn.functional.cross_entropy(model(x[lo : lo + PER_RANK]), y[lo : lo + PER_RANK])
    loss.backward()
    params = [p for p in model.parameters() if p.requires_grad]
    local = _flat([p.grad.detach().clone() for p in params])  # type: ignore[union-attr]
    algo.reduce_gradients(model)
    reduced = _flat([p.grad.detach().clone() for p in params])  # type: ignore[union-attr]
    optimizer.step()
    weights = _flat([p.detach() for p in params])
    return {"loss": float(loss.detach()), "local": local, "reduced": reduced, "weights": weights}


@pytest.mark.world_size(2)
def test_two_ranks_forward_backward_and_reduced_gradients() -> None:
    r0, r1 = run_ranks(_rank, 2, timeout=180)
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in (r0, r1))
    # each rank saw other images: its own gradient differs from the other's
    assert not torch.allclose(r0["local"], r1["local"])
    assert torch.equal(r0["reduced"], r1["reduced"])
    torch.testing.assert_close(r0["reduced"], (r0["local"] + r1["local"]) / 2)
    assert float(r0["reduced"].norm()) > 0
    assert torch.equal(r0["weights"], r1["weights"])
