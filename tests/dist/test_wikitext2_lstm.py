"""Task 3a on 2 gloo ranks with a tiny LSTM on the real WikiText-2 (full 33,278-word vocabulary):
the loop end to end (column split, carried and reset state, lr factor, clipping after the
reduction, a forced NT-ASGD switch and evaluation on the averaged weights), and the exactness of
the split (first-step gradient and validation equal to one worker holding both ranks' columns)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import torch

from mlbench.dist import DistContext
from mlbench.registry import get_algorithm
from mlbench.runs import resolve_config
from mlbench.telemetry.events import EventWriter, read_events
from mlbench.testing import run_ranks
from mlbench.train.loop import train

TINY = [
    "model.embedding_size=8",
    "model.hidden_size=8",
    "data.batch_size=4",
    "data.bptt=10",
]
NO_DROPOUT = [f"model.{k}=0" for k in ("dropout", "dropouth", "dropouti", "dropoute", "wdrop")]


def _smoke(ctx: DistContext, data: str, out: str) -> dict[str, Any]:
    overrides = [
        f"data.dir={data}",
        *TINY,
        "data.train_samples=2000",  # 8 columns of 250 rows: ~25 windows an epoch
        "data.val_samples=2000",
        "train.max_epochs=2",
        "optim.switch_at_eval=1",  # NT-ASGD forced at the first evaluation
        "train.log_every_steps=1",
        "train.log_every_seconds=0",
    ]
    task, cfg = resolve_config("wikitext2-lstm", overrides=overrides)
    run_dir = Path(out)
    events = EventWriter(run_dir / f"rank-{ctx.rank}.jsonl", "smoke", ctx.rank)
    try:
        summary = train(task, cfg, ctx, events, run_dir, get_algorithm(cfg.algorithm.name))
    finally:
        events.close()
    return {"summary": asdict(summary), "events": read_events(run_dir / f"rank-{ctx.rank}.jsonl")}


@pytest.mark.world_size(2)
def test_two_ranks_train_and_validate_on_real_wikitext2(
    real_wikitext2: Path, tmp_path: Path
) -> None:
    ranks = run_ranks(_smoke, 2, str(real_wikitext2), str(tmp_path), timeout=240)
    s0, s1 = (r["summary"] for r in ranks)
    assert s0["steps"] == s1["steps"] and s0["stop_reason"] == "max_epochs"
    assert s0["epochs"] == 2
    assert s0["final_metrics"] == s1["final_metrics"]  # global metrics
    vals = [e["value"] for e in ranks[0]["events"] if e["kind"] == "val"]
    perplexities = [
        e["value"] for e in ranks[0]["events"] if e["kind"] == "val" and e["name"] == "perplexity"
    ]
    assert vals and len(perplexities) == 2
    # the first evaluation switched to averaged SGD; the second used the averaged weights
    averaged = [
        e["value"] for e in ranks[0]["events"] if e["kind"] == "val" and e["name"] == "averaged"
    ]
    assert averaged == [0.0, 1.0]
    # from ~33,000 (uniform over the vocabulary) down: it trains
    assert perplexities[-1] < 5_000, perplexities
    assert math.isfinite(s0["final_metrics"]["loss"])
    assert s0["final_metrics"]["tokens"] == 10 * (2000 // 10 - 1)
    # throughput in target tokens: each step is seq_len × 4 columns
    train_events = [e for e in ranks[0]["events"] if e["kind"] == "train"]
    assert train_events


def _first_step(ctx: DistContext, data: str) -> dict[str, Any]:
    """This rank's first-step gradient averaged over the ranks, and the validation metrics, next
    to the same computed by one worker holding every column (world size 1, batch 2·4)."""
    overrides = [f"data.dir={data}", *TINY, *NO_DROPOUT, "data.train_samples=20000"]
    overrides.append("data.val_samples=3000")
    results: dict[str, Any] = {}
    for label, dist, batch in (
        ("split", ctx, 4),
        ("one", dataclasses.replace(ctx, rank=0, world_size=1), 4 * ctx.world_size),
    ):
        task, cfg = resolve_config(
            "wikitext2-lstm", overrides=[*overrides, f"data.batch_size={batch}"]
        )
        task_data = task.build_data(cfg, dist)
        torch.manual_seed(0)
        model = task.build_model(cfg, task_data.facts)
        task.start_epoch(0)
        task_data.train.set_epoch(0)
        window = next(iter(task_data.train))
        out = task.train_forward(model, window)
        out.loss.backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        dist.all_reduce_sum(grads)
        grads /= dist.world_size
        model.eval()
        results[label] = {
            "grads": grads,
            "seq_len": window.seq_len,
            "val": task.evaluate(model, task_data.val, dist),
        }
    return results


@pytest.mark.world_size(2)
def test_two_ranks_equal_one_worker_with_both_ranks_columns(real_wikitext2: Path) -> None:
    ranks = run_ranks(_first_step, 2, str(real_wikitext2), timeout=240)
    for r in ranks:
        split, one = r["split"], r["one"]
        assert split["seq_len"] == one["seq_len"]
        assert torch.allclose(split["grads"], one["grads"], atol=1e-6, rtol=1e-4)
        assert split["grads"].abs().sum() > 0
        assert split["val"]["tokens"] == one["val"]["tokens"] == 10 * (3000 // 10 - 1)
        assert split["val"]["loss"] == pytest.approx(one["val"]["loss"], rel=1e-6)
    assert ranks[0]["split"]["val"] == ranks[1]["split"]["val"]
