"""Tasks 4a and 4b on 2 gloo ranks with tiny models on real data (Multi30k prepared as the WMT
recipes prepare it; the real newstest2014 as the test set): the loop end to end (accumulation
derived from the global batch, global normalisation, clipping, fp16, beam search, distributed
BLEU), and the exactness of the split: k=1 on a global batch and k=2 on its halves give the same
reduced first-step gradient."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import torch

from mlbench.algorithms.allreduce import AllReduce
from mlbench.dist import DistContext
from mlbench.registry import get_algorithm
from mlbench.runs import resolve_config
from mlbench.telemetry.events import EventWriter, read_events
from mlbench.testing import run_ranks
from mlbench.train.loop import train

#: tiny models; a short test set decoded with a short limit (a tiny model rambles to the limit)
TINY = {
    "wmt16-gnmt": [
        "model.hidden_size=16",
        "model.layers=2",
        "data.global_batch=32",
        "data.batch_size=8",  # k=2: 2 micro-batches of 8 per rank; k=1: 4
        "data.val_samples=12",
        "decode.max_len=12",
    ],
    "wmt17-transformer": [
        "model.d_model=16",
        "model.ffn_size=32",
        "model.heads=2",
        "model.encoder_layers=2",
        "model.decoder_layers=2",
        "data.global_tokens=1024",
        "data.batch_size=256",  # k=2: 2 micro-batches of ≤ 256 padded tokens per rank; k=1: 4
        "data.val_samples=12",
        "decode.max_len_extra=4",
    ],
}
NO_DROPOUT = {
    "wmt16-gnmt": ["model.dropout=0"],
    "wmt17-transformer": [
        "model.dropout=0",
        "model.attention_dropout=0",
        "model.relu_dropout=0",
    ],
}


def _train(
    ctx: DistContext, task_name: str, overrides: list[str], run_dir: Path, algorithm: Any = None
) -> tuple[Any, Any, dict[str, Any], list[dict[str, Any]]]:
    """One run through the real loop: (task, config, summary, this rank's events)."""
    task, cfg = resolve_config(task_name, overrides=overrides)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / f"rank-{ctx.rank}.jsonl"
    events = EventWriter(path, "translation", ctx.rank)
    try:
        summary = train(
            task, cfg, ctx, events, run_dir, algorithm or get_algorithm(cfg.algorithm.name)
        )
    finally:
        events.close()
    return task, cfg, asdict(summary), read_events(path)


def _smoke(ctx: DistContext, task_name: str, data: str, out: str) -> dict[str, Any]:
    overrides = [
        f"data.dir={data}",
        *TINY[task_name],
        "data.train_samples=640",
        "train.max_steps=6",
        "train.eval_every_steps=3",
        "train.log_every_steps=1",
        "train.log_every_seconds=0",
    ]
    task, cfg, summary, events = _train(ctx, task_name, overrides, Path(out))
    return {
        "summary": summary,
        "events": events,
        "accumulation": task.accumulation(cfg, ctx.world_size),
        "goal": task.describe_goal(cfg),
    }


@pytest.mark.world_size(2)
@pytest.mark.parametrize("task_name", list(TINY))
def test_two_ranks_train_decode_and_score(task_name: str, real_data: Path, tmp_path: Path) -> None:
    """The official path as configured (fp16 with dynamic loss scaling, the task's batcher,
    accumulation derived from k), to a BLEU evaluated by beam search on both ranks."""
    ranks = run_ranks(_smoke, 2, task_name, str(real_data), str(tmp_path), timeout=240)
    summaries = [r["summary"] for r in ranks]
    for r, s in zip(ranks, summaries, strict=True):
        assert r["accumulation"] == 2
        assert s["steps"] == 6 and s["stop_reason"] == "max_steps"
        assert s["precision"] == "fp16" and s["loss_scale"] is not None
        assert s["unit"] == "tokens" and s["samples"] > 0
        m = s["final_metrics"]
        assert math.isfinite(m["loss"]) and m["loss"] > 0
        assert 0.0 <= m["bleu"] <= 100.0
        assert m["sentences"] == 12  # the split covers the test sentences exactly once
        evals = [e for e in r["events"] if e["kind"] == "val" and e["name"] == "bleu"]
        assert len(evals) == 2  # at steps 3 and 6
        assert r["goal"]["signature"].startswith("nrefs:1|case:lc|eff:no|tok:intl|smooth:exp")
    # metrics are global: the same on both ranks (BLEU from all-reduced statistics)
    assert summaries[0]["final_metrics"] == summaries[1]["final_metrics"]
    # a perplexity from the teacher-forced test loss, per target token
    m = summaries[0]["final_metrics"]
    assert m["perplexity"] == pytest.approx(math.exp(m["loss"]))


class RecordingAllReduce(AllReduce):
    """All-reduce that keeps a copy of the first step's reduced gradient (the step's gradients
    are scaled by the global count before the reduction: what is kept is the final average)."""

    first: torch.Tensor | None = None

    def reduce_gradients(self, model: torch.nn.Module) -> None:
        super().reduce_gradients(model)
        if RecordingAllReduce.first is None:
            grads = [p.grad.flatten() for p in model.parameters() if p.grad is not None]
            RecordingAllReduce.first = torch.cat(grads).clone()


def _first_step(ctx: DistContext, task_name: str, data: str, out: str) -> dict[str, Any]:
    overrides = [
        f"data.dir={data}",
        *TINY[task_name],
        *NO_DROPOUT[task_name],
        "train.precision=fp32",
        "train.max_steps=1",
        "train.eval_every_steps=100",
        "data.val_samples=2",
        "algorithm.name=allreduce",
    ]
    run_dir = Path(out) / f"k{ctx.world_size}"
    task, cfg, summary, _ = _train(ctx, task_name, overrides, run_dir, RecordingAllReduce)
    assert RecordingAllReduce.first is not None
    return {
        "grads": RecordingAllReduce.first,
        "accumulation": task.accumulation(cfg, ctx.world_size),
        "units": summary["samples"],
    }


@pytest.mark.world_size(2)
@pytest.mark.parametrize("task_name", list(TINY))
def test_k2_on_halves_equals_k1_on_the_global_batch(
    task_name: str, real_data: Path, tmp_path: Path
) -> None:
    """The same global batch (the batchers' plan depends on the seed and epoch, not on k) in
    4 micro-batches on one worker or 2 micro-batches on each of two: the reduced gradients
    agree — gradients are averaged over the *global* sentence (4a) or token (4b) count, not
    per rank (the original summed 4a's across ranks: k× too large)."""
    one = run_ranks(_first_step, 1, task_name, str(real_data), str(tmp_path), timeout=240)[0]
    two = run_ranks(_first_step, 2, task_name, str(real_data), str(tmp_path), timeout=240)
    assert one["accumulation"] == 4 and all(r["accumulation"] == 2 for r in two)
    assert one["grads"].abs().sum() > 0
    assert sum(r["units"] for r in two) == one["units"]  # the same target tokens in all
    for r in two:
        torch.testing.assert_close(r["grads"], one["grads"], atol=1e-6, rtol=1e-4)


def _overflowing(ctx: DistContext, data: str, out: str) -> dict[str, Any]:
    """4a on fp16 from an absurd loss scale: the first steps overflow and are skipped."""
    overrides = [
        f"data.dir={data}",
        *TINY["wmt16-gnmt"],
        "train.loss_scale_init=1e12",
        "train.max_steps=40",
        "train.eval_every_steps=100",
        "data.val_samples=2",
        "train.log_every_steps=1",
        "train.log_every_seconds=0",
    ]
    _, _, summary, events = _train(ctx, "wmt16-gnmt", overrides, Path(out))
    lrs = [e["value"] for e in events if e["name"] == "lr"]
    return {"summary": summary, "lrs": lrs}


@pytest.mark.world_size(1)
def test_gnmt_schedule_counts_applied_updates_only(real_data: Path, tmp_path: Path) -> None:
    """MLPerf's GNMT steps its schedule only when the update was applied: a step skipped on an
    fp16 overflow leaves the warm-up where it was."""
    from mlbench.schedules import WarmupStepDecay

    r = run_ranks(_overflowing, 1, str(real_data), str(tmp_path), timeout=240)[0]
    s = r["summary"]
    skipped = s["skipped_steps"]
    assert s["steps"] == 40 and 0 < skipped < 40
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=2e-3)
    schedule = WarmupStepDecay(
        opt,
        lr=2e-3,
        warmup_steps=200,
        warmup_start=0.01,
        decay_start=10**6,
        decay_interval=1,
        decay_steps=4,
        factor=0.5,
    )
    # the last step (index 39) was applied: the lr it used follows 39 − skipped updates
    assert r["lrs"][-1] == pytest.approx(schedule.lr_at(39 - skipped))
    assert r["lrs"][-1] != pytest.approx(schedule.lr_at(39))
