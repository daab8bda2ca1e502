"""Task 1b (imagenet-resnet50): the spec, batch and decoder resolution, the normalising loader,
the optimizer's weight-decay groups, evaluation, and the wiring of data → loop → events.

``mlbench.data.imagenet`` and ``mlbench.data.imagestream`` are exercised here through minimal
stand-ins with their agreed interfaces (installed in ``sys.modules`` for one test): what is under
test is the task's use of them, not them (their own tests use the generated ILSVRC tree)."""

from __future__ import annotations

import dataclasses
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from mlbench.config import apply_overrides
from mlbench.dist import DistContext
from mlbench.errors import ConfigError
from mlbench.registry import get_algorithm, get_task
from mlbench.runs import resolve_config
from mlbench.tasks.imagenet_resnet50 import (
    ImageNetConfig,
    NormalizedLoader,
    auto_batch,
    decode_target,
    spread,
)
from mlbench.telemetry.events import EventWriter, read_events
from mlbench.train.loop import train

ONE = DistContext(rank=0, world_size=1, local_rank=0, backend="gloo", device=torch.device("cpu"))
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def test_spec_is_goyal_et_al_and_mlperf_target():
    task = get_task("imagenet-resnet50")
    assert task.task_id == "1b" and task.unit == "images"
    assert (task.target.metric, task.target.value, task.target.light_value) == ("top1", 75.9, 70)
    cfg = task.default_config()
    assert isinstance(cfg, ImageNetConfig)
    o, d = cfg.optim, cfg.data
    assert (o.lr, o.lr_batch, o.momentum, o.weight_decay) == (0.1, 256, 0.9, 1e-4)
    assert (o.warmup_epochs, tuple(o.milestones), o.decay_factor) == (5.0, (30, 60, 80), 0.1)
    assert not o.nesterov and not o.bn_weight_decay
    assert cfg.train.max_epochs == 90 and cfg.model.zero_init_residual
    assert (d.image_size, d.resize_size, d.batch_size, d.decode_on) == (224, 256, 0, "auto")
    assert (tuple(d.mean), tuple(d.std)) == (MEAN, STD)
    assert task.official_differences(cfg) == []


def test_explicit_batch_is_not_official_loader_settings_are():
    task, cfg = resolve_config(
        "imagenet-resnet50",
        overrides=["data.workers=6", "data.threads=2", "data.decode_on=cpu", "data.dir=/x"],
    )
    assert task.official_differences(cfg) == []
    _, explicit = resolve_config("imagenet-resnet50", overrides=["data.batch_size=256"])
    assert task.official_differences(explicit) == ["data.batch_size"]


@pytest.mark.parametrize(
    ("requested", "device", "expected"),
    [(0, "cpu", 32), (0, "cuda", 256), (64, "cpu", 64), (512, "cuda", 512)],
)
def test_auto_batch_per_device(requested, device, expected):
    assert auto_batch(requested, torch.device(device)) == expected


def _device_decode(monkeypatch: pytest.MonkeyPatch, usable: bool) -> list[torch.device]:
    asked: list[torch.device] = []

    def available(device: torch.device) -> tuple[bool, str]:
        asked.append(device)
        return usable, "nvJPEG ok" if usable else "torchvision is not installed"

    module = types.ModuleType("mlbench.data.device_decode")
    module.device_decoder_available = available  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mlbench.data.device_decode", module)
    return asked


def test_decode_target(monkeypatch):
    asked = _device_decode(monkeypatch, usable=True)
    assert decode_target("auto", torch.device("cpu"))[0] == "cpu"
    assert asked == []  # a CPU run never asks for nvJPEG
    assert decode_target("auto", torch.device("cuda", 0)) == ("device", "nvJPEG ok")
    assert asked == [torch.device("cuda", 0)]
    assert decode_target("cpu", torch.device("cuda", 0))[0] == "cpu"
    assert decode_target("device", torch.device("cpu"))[0] == "device"  # asked for: as is
    _device_decode(monkeypatch, usable=False)
    assert decode_target("auto", torch.device("cuda", 0)) == (
        "cpu",
        "torchvision is not installed",
    )


def test_spread_covers_every_class_of_a_sorted_list():
    labels = [c for c in range(5) for _ in range(8)]  # class-sorted, as ImageNet's train list
    keep = spread(len(labels), 10)
    assert len(keep) == 10 and keep == sorted(set(keep))
    assert {labels[i] for i in keep} == set(range(5))
    assert spread(40, None) == list(range(40)) == spread(40, 99)
    assert spread(7, 1) == [0]


class Stub:
    """A uint8 loader with the agreed interface, recording what the wrapper forwards."""

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.batches, self.epochs, self.closed, self.loaded = batches, [], False, None
        self.num_samples = sum(len(y) for _, y in batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"position": 3}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loaded = state

    def close(self) -> None:
        self.closed = True


def test_normalized_loader_converts_and_forwards():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (2, 3, 5, 5), generator=g, dtype=torch.uint8)
    y = torch.tensor([3, 1])
    inner = Stub([(x, y), (x, y)])
    loader = NormalizedLoader(inner, MEAN, STD)
    out = list(loader)
    assert len(out) == len(loader) == 2 and loader.num_samples == 4
    xb, yb = out[0]
    expected = (x.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(
        1, 3, 1, 1
    )
    assert xb.dtype == torch.float32
    torch.testing.assert_close(xb, expected, rtol=1e-6, atol=1e-6)
    assert torch.equal(yb, y)
    assert x.dtype == torch.uint8 and int(x.max()) > 1  # the source batch is untouched
    loader.set_epoch(4)
    assert inner.epochs == [4]
    assert loader.state_dict() == {"position": 3}
    loader.load_state_dict({"position": 1})
    assert inner.loaded == {"position": 1}
    loader.close()
    assert inner.closed


class SkippingIter:
    """A streaming loader's epoch: ``skip`` moves on without producing the batches."""

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.batches, self.next, self.produced = batches, 0, 0

    def __iter__(self) -> SkippingIter:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.next >= len(self.batches):
            raise StopIteration
        self.next += 1
        self.produced += 1
        return self.batches[self.next - 1]

    def skip(self, n: int) -> int:
        count = min(n, len(self.batches) - self.next)
        self.next += count
        return count


class StreamingStub(Stub):
    def __iter__(self) -> SkippingIter:
        self.current = SkippingIter(self.batches)
        return self.current


def test_a_resumed_epoch_skips_through_the_wrapper():
    """train/resume.py replays a resumed epoch's done batches with ``skip(n)`` when the
    iterator has it: the wrapper must not hide the streaming loader's."""
    pixels = [torch.full((1, 3, 2, 2), i, dtype=torch.uint8) for i in range(5)]
    batches = [(x, torch.tensor([i])) for i, x in enumerate(pixels)]
    inner = StreamingStub(batches)
    it = iter(NormalizedLoader(inner, MEAN, STD))
    streaming = inner.current
    assert it.skip(3) == 3 and streaming.produced == 0  # moved on without producing
    x, y = next(it)
    assert y.tolist() == [3] and streaming.produced == 1
    assert x.dtype == torch.float32  # what is produced is normalised
    assert it.skip(9) == 1  # only one was left
    # an inner iterator without skip: drawn and dropped
    plain = iter(NormalizedLoader(Stub(batches), MEAN, STD))
    assert plain.skip(4) == 4
    assert next(plain)[1].tolist() == [4]
    assert plain.skip(2) == 0


def test_optimizer_exempts_batch_norm_from_weight_decay():
    task = get_task("imagenet-resnet50")
    cfg = task.default_config()
    model = task.build_model(cfg, {"classes": 10})  # type: ignore[attr-defined]
    opt = task.build_optimizer(cfg, model, 4)  # type: ignore[attr-defined]
    decay, exempt = opt.param_groups
    bn = {
        id(p)
        for m in model.modules()
        if isinstance(m, torch.nn.BatchNorm2d)
        for p in m.parameters(recurse=False)
    }
    assert {id(p) for p in exempt["params"]} == bn and exempt["weight_decay"] == 0.0
    assert bn.isdisjoint(id(p) for p in decay["params"]) and decay["weight_decay"] == 1e-4
    assert len(decay["params"]) + len(exempt["params"]) == len(list(model.parameters()))
    # CPU: 32 per worker, 4 workers → 128 images a step → 0.1 · 128/256
    assert decay["lr"] == exempt["lr"] == pytest.approx(0.05)
    assert decay["momentum"] == 0.9
    cfg.optim.bn_weight_decay = True
    (everything,) = task.build_optimizer(cfg, model, 4).param_groups  # type: ignore[attr-defined]
    assert everything["weight_decay"] == 1e-4


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.mean=[0.5, 0.5]", "3 values"),
        ("data.std=[0.2, 0.0, 0.2]", "positive"),
        ("data.resize_size=200", "resize_size"),
        ("optim.milestones=[60, 30]", "increasing"),
    ],
)
def test_validate_rejects(override, message):
    task, cfg = resolve_config("imagenet-resnet50", overrides=[override])
    with pytest.raises(ConfigError, match=message):
        task.validate(cfg, 2)


def test_evaluate_is_top1_top5_and_loss_over_every_image():
    task = get_task("imagenet-resnet50")
    g = torch.Generator().manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 8))
    batches = [
        (torch.randn(n, 3, 2, 2, generator=g), torch.randint(0, 8, (n,), generator=g))
        for n in (5, 5, 3)
    ]
    metrics = task.evaluate(model, batches, ONE)  # type: ignore[attr-defined]
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    with torch.no_grad():
        logits = model(x)
    top5 = logits.topk(5, dim=1).indices
    assert metrics["samples"] == 13
    assert metrics["top1"] == pytest.approx(100 * float((logits.argmax(1) == y).float().mean()))
    assert metrics["top5"] == pytest.approx(100 * float((top5 == y[:, None]).any(1).float().mean()))
    assert metrics["loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, y)))


# --- data → loop wiring, through stand-ins of the two data modules --------------------------


@dataclasses.dataclass(frozen=True)
class FakeIndex:
    """mlbench.data.imagenet.ImageNetIndex's agreed shape."""

    source: Path
    wnids: tuple[str, ...]
    train: tuple[tuple[str, int], ...]
    val: tuple[tuple[str, int], ...]
    val_layout: str = "flat"

    def files(self, split: str) -> tuple[list[str], list[int]]:
        items = self.train if split == "train" else self.val
        return [str(self.source / p) for p, _ in items], [label for _, label in items]


class FakeStream:
    """mlbench.data.imagestream.ImageStreamLoader's agreed interface: uint8 [B,3,S,S] batches
    (pixels a function of the file name) and int64 labels, an equal shard per rank in training
    (drop last), every image once over the ranks in validation."""

    made: ClassVar[list[FakeStream]] = []

    def __init__(
        self,
        files: list[str],
        labels: list[int],
        batch_size: int,
        *,
        train: bool,
        rank: int,
        world_size: int,
        seed: int,
        image_size: int = 224,
        resize_size: int = 256,
        workers: int = 2,
        threads: int = 1,
        device: torch.device | None = None,
        decode_on: str = "cpu",
        drop_last: bool | None = None,
    ) -> None:
        self.files, self.labels = list(files)[rank::world_size], list(labels)[rank::world_size]
        if train:
            n = len(files) // world_size
            self.files, self.labels = self.files[:n], self.labels[:n]
        self.batch_size, self.train, self.image_size = batch_size, train, image_size
        self.kwargs = {
            "seed": seed,
            "resize_size": resize_size,
            "workers": workers,
            "threads": threads,
            "device": device,
            "decode_on": decode_on,
        }
        self.epochs: list[int] = []
        self.num_samples = len(self.files)
        FakeStream.made.append(self)

    def __len__(self) -> int:
        n = len(self.files)
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        s = self.image_size
        for b in range(len(self)):
            names = self.files[b * self.batch_size : (b + 1) * self.batch_size]
            labels = self.labels[b * self.batch_size : (b + 1) * self.batch_size]
            x = torch.stack(
                [torch.full((3, s, s), sum(map(ord, n)) % 256, dtype=torch.uint8) for n in names]
            )
            yield x, torch.tensor(labels, dtype=torch.int64)


@pytest.fixture
def stand_ins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeIndex:
    wnids = tuple(f"n{i:08d}" for i in range(5))
    index = FakeIndex(
        tmp_path / "ILSVRC",
        wnids,
        tuple((f"train/{w}/{w}_{j}.JPEG", c) for c, w in enumerate(wnids) for j in range(32)),
        tuple((f"val/ILSVRC2012_val_{j:08d}.JPEG", j % 5) for j in range(1, 12)),
    )
    imagenet = types.ModuleType("mlbench.data.imagenet")
    imagenet.OFFICIAL = (1000, 1_281_167, 50_000)  # type: ignore[attr-defined]
    imagenet.load = lambda data_dir: index  # type: ignore[attr-defined]
    stream = types.ModuleType("mlbench.data.imagestream")
    stream.ImageStreamLoader = FakeStream  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mlbench.data.imagenet", imagenet)
    monkeypatch.setitem(sys.modules, "mlbench.data.imagestream", stream)
    monkeypatch.setattr(FakeStream, "made", [])
    return index


def test_prepare_data_counts_limits_and_flags_a_small_set(stand_ins, tmp_path):
    task, cfg = resolve_config("imagenet-resnet50", overrides=[f"data.dir={tmp_path}"])
    info = task.prepare_data(cfg)
    assert (info.train_size, info.val_size) == (160, 11)
    assert len(info.issues) == 1 and "5 classes, 160 train / 11 val" in info.issues[0]
    assert "1000 / 1281167 / 50000" in info.issues[0]
    limited = apply_overrides(cfg, ["data.train_samples=10", "data.val_samples=100"])
    info = task.prepare_data(limited)
    assert (info.train_size, info.val_size) == (10, 11)


def test_build_data_resolves_batch_and_decoder_and_normalises(stand_ins, tmp_path):
    task, cfg = resolve_config(
        "imagenet-resnet50",
        overrides=[f"data.dir={tmp_path}", "data.train_samples=80", "data.image_size=16"],
    )
    ctx = DistContext(rank=1, world_size=2, local_rank=1, backend="gloo", device=ONE.device)
    data = task.build_data(cfg, ctx)  # type: ignore[attr-defined]
    train_stream, val_stream = FakeStream.made
    assert train_stream.train and not val_stream.train
    assert train_stream.batch_size == val_stream.batch_size == 32  # auto, on a CPU
    assert data.recorded == {
        "batch_size": 32,
        "val_batch_size": 32,
        "decode_on_device": 0.0,
        "loader_workers": 0,  # auto, on a CPU: decoding in the rank
    }
    for stream in FakeStream.made:
        assert stream.kwargs == {
            "seed": 42,
            "resize_size": 256,
            "workers": 0,
            "threads": 1,
            "device": ONE.device,
            "decode_on": "cpu",
        }
    # 80 of the 160 class-sorted training images, spread over all 5 classes; rank 1's half
    assert sorted(set(train_stream.labels)) == [0, 1, 2, 3, 4]
    assert len(train_stream.files) == 40
    assert all(f.startswith(str(stand_ins.source)) for f in train_stream.files)
    assert data.facts == {"classes": 5}
    assert isinstance(data.train, NormalizedLoader) and isinstance(data.val, NormalizedLoader)
    (x, y), *_ = list(data.val)
    assert x.shape == (len(val_stream.files), 3, 16, 16) and x.dtype == torch.float32
    assert y.tolist() == val_stream.labels  # rank 1's val images: every other one
    pixel = sum(map(ord, val_stream.files[0])) % 256  # the stand-in's value for the first
    expected = (pixel / 255 - torch.tensor(MEAN)) / torch.tensor(STD)
    torch.testing.assert_close(x[0, :, 0, 0], expected, rtol=1e-5, atol=1e-5)


def test_a_run_through_the_loop_records_the_resolved_batch(stand_ins, tmp_path):
    """The task end to end in the real loop on one rank (ResNet-50 at 32 px): two steps, the
    lr of the scaling rule, an evaluation over every validation image, and the batch that
    ``0`` resolved to in the events."""
    task, cfg = resolve_config(
        "imagenet-resnet50",
        overrides=[
            f"data.dir={tmp_path}",
            "data.batch_size=4",
            "data.val_batch_size=0",
            "data.image_size=32",
            "data.resize_size=32",
            "train.max_steps=2",
            "train.log_every_steps=1",
            "train.log_every_seconds=0",
            "train.resource_every_seconds=0",
        ],
    )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    events = EventWriter(run_dir / "rank-0.jsonl", "inet", 0)
    try:
        summary = train(task, cfg, ONE, events, run_dir, get_algorithm(cfg.algorithm.name))
    finally:
        events.close()
    assert (summary.steps, summary.stop_reason, summary.samples) == (2, "max_steps", 8)
    assert summary.final_metrics["samples"] == 11  # every validation image
    # 4 images on one worker, within the 5-epoch warm-up from min(0.1, 0.1·4/256) = its peak
    assert summary.lr == pytest.approx(0.1 * 4 / 256)
    recorded = {e["name"]: e["value"] for e in read_events(run_dir / "rank-0.jsonl")}
    assert recorded["batch_size"] == 4 and recorded["val_batch_size"] == 32
    assert recorded["decode_on_device"] == 0


def test_a_shard_smaller_than_the_automatic_batch_is_a_one_line_error(stand_ins, tmp_path):
    """40 training images on 2 CPU workers: 20 each, fewer than the 32 that 0 resolves to. The
    launcher's check cannot know the automatic size; build_data says it, naming the cause."""
    task, cfg = resolve_config(
        "imagenet-resnet50", overrides=[f"data.dir={tmp_path}", "data.train_samples=40"]
    )
    ctx = DistContext(rank=0, world_size=2, local_rank=0, backend="gloo", device=ONE.device)
    with pytest.raises(ConfigError, match=r"gets 20 training images.*one step of 32 \(data"):
        task.build_data(cfg, ctx)  # type: ignore[attr-defined]
    fits = apply_overrides(cfg, ["data.batch_size=20"])
    assert len(task.build_data(fits, ctx).train) == 1  # type: ignore[attr-defined]


def test_loader_workers_default_by_device_and_count_in_the_core_budget():
    """Unset: no decoding process on a CPU, AUTO_WORKERS per GPU rank; the launcher's budget
    gets workers × threads either way."""
    from mlbench.tasks.imagenet_resnet50 import AUTO_WORKERS, auto_workers

    assert auto_workers(None, on_gpu=False) == 0
    assert auto_workers(None, on_gpu=True) == AUTO_WORKERS > 0
    assert auto_workers(3, on_gpu=False) == auto_workers(3, on_gpu=True) == 3
    task, cfg = resolve_config("imagenet-resnet50")
    assert task.loader_threads(cfg, on_gpu=False) == 0
    assert task.loader_threads(cfg, on_gpu=True) == AUTO_WORKERS
    _, cfg = resolve_config("imagenet-resnet50", overrides=["data.workers=3", "data.threads=2"])
    assert task.loader_threads(cfg, on_gpu=False) == 6
    # in-memory tasks take no loader cores
    other, ocfg = resolve_config("cifar10-resnet20")
    assert other.loader_threads(ocfg, on_gpu=True) == 0
