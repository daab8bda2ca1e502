"""The loop's step contract on real gloo ranks: accumulation (and ``no_sync``), global
normalisation, clipping after the reduction, the task's lr factor, fractional evaluation, the task
hooks, loaders run to exhaustion and the equal-steps check.

A toy least-squares task keeps every expectation computable by hand: each test compares the
loop's weights with plain PyTorch arithmetic on the same rows, or two loop configurations that
must agree (accumulating 2 × 4 rows == one batch of 8).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from mlbench.config import apply_overrides
from mlbench.data.loader import BatchLoader
from mlbench.dist import DistContext
from mlbench.metrics.classification import global_sums
from mlbench.registry import get_algorithm
from mlbench.tasks.base import DataInfo, RunConfig, StepOut, Target, Task, TaskData
from mlbench.telemetry.events import EventWriter, read_events
from mlbench.testing import run_ranks
from mlbench.train.loop import StepMismatch, train

LR = 0.1
FEATURES = 3


class _Constant:
    """The schedule protocol at its simplest: a fixed lr."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    def on_step(self, step: int) -> None:
        return None

    def on_eval(self, val_loss: float, step: int) -> None:
        return None

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])


class _Short:
    """A loader whose ``len()`` promises more batches than it yields (the plan, not a promise)."""

    def __init__(self, inner: BatchLoader, yields: int, promise: int) -> None:
        self.inner, self.yields, self.promise = inner, yields, promise

    def __len__(self) -> int:
        return self.promise

    def __iter__(self) -> Iterator[Any]:
        for i, batch in enumerate(self.inner):
            if i == self.yields:
                return
            yield batch

    def set_epoch(self, epoch: int) -> None:
        return None


def rows(rank: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank ``rank``'s ``n`` rows of a fixed regression problem (the same on every process)."""
    g = torch.Generator().manual_seed(1000 + rank)
    x = torch.randn(n, FEATURES, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1 * torch.randn(n, 1, generator=g)
    return x, y


class Toy(Task):
    name = "toy"
    task_id = "t"
    title = dataset = model = "toy least squares"
    target = Target(metric="loss", value=-1.0, light_value=-1.0, mode="min")  # never reached
    config_cls = RunConfig
    unit = "rows"

    def __init__(self, batch: dict[int, int], batches: int = 4, **opts: Any) -> None:
        self.batch, self.batches = batch, batches  # per-rank batch size, batches per epoch
        self.lr_factor: float = opts.get("lr_factor", 1.0)
        self.yields: dict[int, int] | None = opts.get("yields")
        self.epochs_started: list[int] = []
        self.eval_contexts = 0

    def prepare_data(self, cfg: RunConfig) -> DataInfo:
        return DataInfo(0, 0, "toy")

    def build_data(self, cfg: RunConfig, dist: DistContext) -> TaskData:
        bs = self.batch[dist.rank]
        x, y = rows(dist.rank, bs * self.batches)
        train_data: Any = BatchLoader(x, y, bs, shuffle=False, drop_last=True, seed=0)
        if self.yields is not None:
            train_data = _Short(train_data, self.yields[dist.rank], self.batches)
        val = BatchLoader(x, y, 64, shuffle=False, drop_last=False, seed=0)
        return TaskData(train_data, val, {"features": FEATURES})

    def build_model(self, cfg: RunConfig, facts: dict[str, Any]) -> torch.nn.Module:
        return torch.nn.Linear(facts["features"], 1, bias=False)

    def build_optimizer(
        self, cfg: RunConfig, model: torch.nn.Module, world_size: int
    ) -> torch.optim.Optimizer:
        return torch.optim.SGD(model.parameters(), lr=LR)

    def build_schedule(self, cfg: Any, optimizer: Any, *args: Any, **kwargs: Any) -> _Constant:
        return _Constant(optimizer)

    def train_forward(self, model: torch.nn.Module, batch: Any) -> StepOut:
        x, y = batch
        loss = torch.nn.functional.mse_loss(model(x), y)
        return StepOut(loss, len(y), lr_factor=self.lr_factor)

    def start_epoch(self, epoch: int) -> None:
        self.epochs_started.append(epoch)

    def eval_context(self, model: Any, optimizer: Any) -> contextlib.AbstractContextManager[None]:
        self.eval_contexts += 1
        return contextlib.nullcontext()

    def evaluate(self, model: torch.nn.Module, val: Any, dist: DistContext) -> dict[str, float]:
        sq, n = 0.0, 0.0
        with torch.no_grad():
            for x, y in val:
                sq += float(((model(x) - y) ** 2).sum())
                n += len(y)
        sq, n = global_sums([sq, n], dist)
        return {"loss": sq / n}


def _train(
    ctx: DistContext, out: Path, task: Toy, scheme: str = "allreduce", *overrides: str
) -> dict[str, Any]:
    cfg = task.with_scheme(task.default_config(), scheme, get_algorithm(scheme).config_cls)
    cfg = apply_overrides(
        cfg,
        [
            "train.log_every_steps=1",
            "train.log_every_seconds=0",
            "train.resource_every_seconds=0",
            *overrides,
        ],
    )
    run_dir = out / f"run-{len(list(out.iterdir()))}"
    run_dir.mkdir()
    path = run_dir / f"rank-{ctx.rank}.jsonl"
    events = EventWriter(path, run_dir.name, ctx.rank)
    try:
        summary = train(task, cfg, ctx, events, run_dir, get_algorithm(scheme))
    finally:
        events.close()
    return {
        "summary": dataclasses.asdict(summary),
        "events": read_events(path),
        "task": {"epochs": task.epochs_started, "eval_contexts": task.eval_contexts},
    }


# The loop trains the module build_model returns; to read its final weights, a subclass keeps it.
class Kept(Toy):
    def build_model(self, cfg: RunConfig, facts: dict[str, Any]) -> torch.nn.Module:
        self.module = super().build_model(cfg, facts)
        return self.module


def _weights(ctx: DistContext, out: Path, task: Kept, scheme: str, *overrides: str) -> dict:
    result = _train(ctx, out, task, scheme, *overrides)
    result["w"] = task.module.weight.detach().clone()
    return result


def _scenarios(ctx: DistContext, out_dir: str) -> dict[str, Any]:
    out = Path(out_dir) / f"rank-{ctx.rank}"
    out.mkdir()
    k, steps = ctx.world_size, "train.max_steps=3"
    res: dict[str, Any] = {}
    # accumulation: 2 micro-batches of 4 rows == one batch of 8, for a synchronous scheme,
    # an overlapping one (hooks muted until the last micro-batch) and DDP (its no_sync)
    for label, scheme, extra in (
        ("allreduce", "allreduce", []),
        ("overlap", "allreduce", ["algorithm.overlap=true"]),
        ("ddp", "ddp", []),
    ):
        four = dict.fromkeys(range(k), 4)
        eight = dict.fromkeys(range(k), 8)
        res[f"acc-{label}"] = _weights(
            ctx, out, Kept(four, batches=8), scheme, steps, "train.accumulate=2", *extra
        )
        res[f"one-{label}"] = _weights(ctx, out, Kept(eight, batches=4), scheme, steps, *extra)
    # global normalisation: ranks with 2 and 6 rows per step
    uneven = {r: 2 + 4 * r for r in range(k)}
    for norm in ("global", "mean"):
        res[f"norm-{norm}"] = _weights(
            ctx, out, Kept(uneven), "allreduce", "train.max_steps=1", f"train.normalize={norm}"
        )
    # clipping after the reduction: a tiny norm bounds the first update at lr · clip
    res["clip"] = _weights(
        ctx,
        out,
        Kept(dict.fromkeys(range(k), 4)),
        "allreduce",
        "train.max_steps=1",
        "train.clip_grad_norm=0.001",
    )
    res["noclip"] = _weights(
        ctx, out, Kept(dict.fromkeys(range(k), 4)), "allreduce", "train.max_steps=1"
    )
    # the task's lr factor scales this step's update, and the lr is restored afterwards
    res["half-lr"] = _weights(
        ctx,
        out,
        Kept(dict.fromkeys(range(k), 4), lr_factor=0.5),
        "allreduce",
        "train.max_steps=1",
    )
    # evaluation every half epoch (4 steps an epoch), task hooks, 2 epochs
    res["fraction"] = _train(
        ctx,
        out,
        Toy(dict.fromkeys(range(k), 4)),
        "allreduce",
        "train.max_epochs=2",
        "train.eval_every_epochs=0.5",
    )
    # a loader that yields 3 batches though len() says 4: the epoch is 3 steps
    res["short"] = _train(
        ctx,
        out,
        Toy(dict.fromkeys(range(k), 4), yields=dict.fromkeys(range(k), 3)),
        "allreduce",
        "train.max_epochs=2",
    )
    if k > 1:  # ranks whose loaders disagree: stopped after the first epoch, with the counts
        try:
            _train(
                ctx,
                out,
                Toy(dict.fromkeys(range(k), 4), yields={r: 2 + r for r in range(k)}),
                "localsgd",
                "algorithm.local_steps=100",
                "train.max_epochs=2",
            )
            res["mismatch"] = None
        except StepMismatch as exc:
            res["mismatch"] = str(exc)
    return res


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return run_ranks(_scenarios, 2, str(tmp_path_factory.mktemp("loop")), timeout=240)


def _reference_step(x: torch.Tensor, y: torch.Tensor, w0: torch.Tensor, lr: float) -> torch.Tensor:
    """One plain SGD step on the mean squared error over the rows ``x``."""
    w = w0.clone().requires_grad_(True)
    torch.nn.functional.mse_loss(x @ w.T, y).backward()
    assert w.grad is not None
    return (w - lr * w.grad).detach()


@pytest.mark.world_size(2)
@pytest.mark.parametrize("label", ["allreduce", "overlap", "ddp"])
def test_accumulation_equals_the_larger_batch(two: list[dict[str, Any]], label: str) -> None:
    for r in two:
        acc, one = r[f"acc-{label}"], r[f"one-{label}"]
        assert acc["summary"]["steps"] == one["summary"]["steps"] == 3
        torch.testing.assert_close(acc["w"], one["w"], rtol=1e-6, atol=1e-7)
        # no communication before the last micro-batch: the same bytes as one batch of 8
        assert acc["summary"]["bytes_sent"] == one["summary"]["bytes_sent"] > 0
        assert acc["summary"]["samples"] == one["summary"]["samples"] == 3 * 8


@pytest.mark.world_size(2)
def test_global_normalisation_weights_every_row_alike(two: list[dict[str, Any]]) -> None:
    x0, y0 = rows(0, 2 * 4)
    x1, y1 = rows(1, 6 * 4)
    x = torch.cat([x0[:2], x1[:6]])
    y = torch.cat([y0[:2], y1[:6]])
    torch.manual_seed(42)  # the loop seeds with cfg.seed before building the model
    w0 = torch.nn.Linear(FEATURES, 1, bias=False).weight.detach()
    want = _reference_step(x, y, w0, LR)  # the mean over all 8 rows, as one process would
    for r in two:
        torch.testing.assert_close(r["norm-global"]["w"], want, rtol=1e-5, atol=1e-6)
    # the per-rank mean (the default) weights rank 0's 2 rows like rank 1's 6: different
    assert not torch.allclose(two[0]["norm-mean"]["w"], want, rtol=1e-4, atol=1e-5)


@pytest.mark.world_size(2)
def test_clipping_bounds_the_update_identically_on_every_rank(two: list[dict[str, Any]]) -> None:
    torch.manual_seed(42)
    w0 = torch.nn.Linear(FEATURES, 1, bias=False).weight.detach()
    clipped = [float((r["clip"]["w"] - w0).norm()) for r in two]
    free = float((two[0]["noclip"]["w"] - w0).norm())
    assert clipped == pytest.approx([LR * 0.001] * 2, rel=1e-3)  # fp32 weights
    assert free > 100 * clipped[0]  # the clip really cut the update
    torch.testing.assert_close(two[0]["clip"]["w"], two[1]["clip"]["w"], rtol=0, atol=0)


@pytest.mark.world_size(2)
def test_lr_factor_scales_one_step_and_is_restored(two: list[dict[str, Any]]) -> None:
    torch.manual_seed(42)
    w0 = torch.nn.Linear(FEATURES, 1, bias=False).weight.detach()
    full = two[0]["noclip"]["w"] - w0
    half = two[0]["half-lr"]["w"] - w0
    torch.testing.assert_close(half, 0.5 * full, rtol=1e-5, atol=1e-7)
    assert two[0]["half-lr"]["summary"]["lr"] == LR


@pytest.mark.world_size(2)
def test_fractional_evaluation_and_task_hooks(two: list[dict[str, Any]]) -> None:
    for r in two:
        run = r["fraction"]
        val_steps = sorted({e["step"] for e in run["events"] if e["kind"] == "val"})
        assert val_steps == [2, 4, 6, 8]
        assert run["summary"]["evals"] == 4 and run["task"]["eval_contexts"] == 4
        assert run["task"]["epochs"] == [0, 1]
        assert run["summary"]["unit"] == "rows"
        rates = [e for e in run["events"] if e["name"] == "throughput"]
        assert rates and all(e["unit"] == "rows/s" for e in rates)


@pytest.mark.world_size(2)
def test_loader_runs_to_exhaustion_not_to_its_len(two: list[dict[str, Any]]) -> None:
    for r in two:
        run = r["short"]
        assert run["summary"]["steps"] == 6 and run["summary"]["epochs"] == 2.0
        ends = [e["step"] for e in run["events"] if e["name"] == "epoch_end"]
        assert ends == [3, 6]


@pytest.mark.world_size(2)
def test_ranks_with_different_step_counts_are_stopped(two: list[dict[str, Any]]) -> None:
    for r in two:
        assert r["mismatch"] is not None, "a rank went on with fewer batches than its peer"
        assert "between 2 and 3 steps" in r["mismatch"]


class Slow(Toy):
    """Each forward takes at least 4 ms, so log windows measured in time span several steps."""

    def train_forward(self, model: torch.nn.Module, batch: Any) -> StepOut:
        time.sleep(0.004)
        return super().train_forward(model, batch)


def test_windows_close_by_steps_and_time_and_rules_still_fire(tmp_path: Path) -> None:
    """``log_every_seconds`` bounds a window from below in time; evaluation every N steps, the
    epoch ends and max_steps fire at their step whatever the window (the loop skips the
    between-steps rules only in stretches where none of them can fire)."""
    ctx = DistContext(0, 1, 0, "gloo", torch.device("cpu"))
    # 16 batches an epoch, 30 steps: the epoch ends (and evaluates) at 16, evaluations every 12
    # steps, the final one at 30
    overrides = ["train.max_steps=30", "train.eval_every_steps=12", "train.max_epochs=5"]
    by_time = _train(
        ctx, tmp_path, Slow({0: 4}, 16), "allreduce", *overrides, "train.log_every_seconds=0.02"
    )
    by_step = _train(ctx, tmp_path, Slow({0: 4}, 16), "allreduce", *overrides)
    for result in (by_time, by_step):
        s, ev = result["summary"], result["events"]
        assert (s["steps"], s["stop_reason"]) == (30, "max_steps")
        assert [e["step"] for e in ev if e["kind"] == "val"] == [12, 16, 24, 30]
        assert [e["step"] for e in ev if e["name"] == "epoch_end"] == [16]
        assert s["samples"] == 30 * 4  # every step's rows, however the windows fell
    assert len([e for e in by_step["events"] if e["name"] == "train_time"]) == 30
    windows = [(e["step"], e["value"]) for e in by_time["events"] if e["name"] == "train_time"]
    assert 4 <= len(windows) < 15, windows
    # a window closes early only at an epoch end, an evaluation or the end; elsewhere it lasted
    # ≥ 20 ms of wall time (its steps' train time is that less a few µs of bookkeeping a step)
    unforced = [(step, t) for step, t in windows if step not in {12, 16, 24, 30}]
    assert unforced and all(t >= 0.019 for _, t in unforced), windows
