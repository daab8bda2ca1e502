"""Task 1a: image classification, CIFAR-10 with ResNet-20 (goal: val top-1 ≥ 80 %, light 70 %).

Hyperparameters are the reference's (see ../shared/reference/MLBENCH.md): batch 128 per worker,
SGD momentum 0.9, weight decay 1e-4, lr 0.02·k with a log2(k)-epoch linear warm-up from 0.02, then
reduce-on-plateau on validation loss (×0.5, patience 1, abs threshold 0.01, min 0.02), 164 epochs
max, gradients all-reduced over the flattened model after backward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from mlbench.config import BATCH_MAX, param, section
from mlbench.errors import ConfigError
from mlbench.tasks.base import (
    DataConfig,
    DataInfo,
    RunConfig,
    Target,
    TaskData,
    TrainConfig,
    seed_param,
)
from mlbench.tasks.common import SGDConfig, SGDTask, classification_metrics

if TYPE_CHECKING:
    import torch

    from mlbench.dist import DistContext


@dataclass
class CifarData(DataConfig):
    dataset: str = param("cifar10", choices=("cifar10",), help="CIFAR-10, official split")
    batch_size: int = param(
        128, minimum=1, maximum=BATCH_MAX, help="training batch size per worker"
    )
    val_batch_size: int = param(
        128, open=True, minimum=1, maximum=BATCH_MAX, help="validation batch per worker"
    )
    augment: bool = param(True, help="pad-4 random crop + horizontal flip on training batches")
    crop_padding: int = param(4, minimum=0)
    augment_on: Literal["auto", "cpu", "device"] = param(
        "auto",
        open=True,
        help="where pad-crop, flip and normalisation run: cpu (before the copy), device (the "
        "shard resident on the device, augmented there), auto (device on CUDA, else cpu); the "
        "batches are bit-identical either way (docs/timing.md)",
    )
    mean: tuple[float, ...] = param((0.4914, 0.4822, 0.4465), help="normalisation mean (RGB)")
    std: tuple[float, ...] = param((0.2023, 0.1994, 0.2010), help="normalisation std (RGB)")


@dataclass
class ResNetConfig:
    depth: int = param(20, choices=(20, 32, 44, 56, 110), help="ResNet v1 depth (6n+2)")
    shortcut: Literal["A", "B"] = param("B", help="A: zero-pad, B: 1x1 conv projection")


@dataclass
class Cifar10Config(RunConfig):
    task: str = param("cifar10-resnet20", choices=("cifar10-resnet20",))
    seed: int = seed_param(42)
    train: TrainConfig = section(lambda: TrainConfig(max_epochs=164))
    data: CifarData = section(CifarData)
    model: ResNetConfig = section(ResNetConfig)
    optim: SGDConfig = section(
        lambda: SGDConfig(
            lr=0.02,
            lr_scaling="linear",
            momentum=0.9,
            weight_decay=1e-4,
            warmup="log2k",
            schedule="plateau",
            plateau_factor=0.5,
            plateau_patience=1,
            plateau_threshold=0.01,
            min_lr=0.02,
        )
    )


class Cifar10ResNet20(SGDTask):
    name = "cifar10-resnet20"
    task_id = "1a"
    title = "Image classification (CIFAR-10, ResNet-20)"
    dataset = "CIFAR-10 (50k train / 10k val, 32x32 RGB, 10 classes)"
    model = "ResNet-20 v1 (0.27M parameters)"
    target = Target(metric="top1", value=80.0, light_value=70.0, mode="max")
    config_cls = Cifar10Config
    unit = "images"
    deviations = (
        "Training augmentation (pad-4 random crop, horizontal flip) runs as whole-batch tensor "
        "operations from a seeded generator, not the original's per-image PIL transforms in "
        "loader processes: the same distribution, another random stream, and no loader "
        "processes competing with training for the CPU cores.",
        "Validation shards cover every test image exactly once (sizes may differ by one) and "
        "the metrics are all-reduced sums, so top-1 is over all 10,000 images for any k; the "
        "original split validation into equal shards, which leave the remainder out when k "
        "does not divide 10,000.",
    )

    def validate(self, cfg: RunConfig, world_size: int) -> None:
        super().validate(cfg, world_size)
        assert isinstance(cfg, Cifar10Config)
        if len(cfg.data.mean) != 3 or len(cfg.data.std) != 3:
            raise ConfigError("data.mean and data.std need 3 values (R, G, B)")

    def prepare_data(self, cfg: RunConfig) -> DataInfo:
        from mlbench.data import cifar10

        directory, (n_train, n_val) = cifar10.ensure(self.data_root(cfg), cfg.data.download)
        issues = []
        if (n_train, n_val) != cifar10.OFFICIAL_SIZES:
            issues.append(
                f"CIFAR-10 files hold {n_train}/{n_val} train/val images, not 50000/10000"
            )
        train = min(n_train, cfg.data.train_samples or n_train)
        val = min(n_val, cfg.data.val_samples or n_val)
        return DataInfo(train, val, f"CIFAR-10 from {directory}", tuple(issues))

    def build_data(self, cfg: RunConfig, dist: DistContext) -> TaskData:
        import torch

        from mlbench.data import augment, cifar10
        from mlbench.data.loader import BatchLoader
        from mlbench.data.partition import shard_indices

        assert isinstance(cfg, Cifar10Config)
        d = cfg.data
        directory = cifar10.find(self.data_root(cfg))
        if directory is None:
            raise ConfigError(f"CIFAR-10 not found under {d.dir}")
        # augmentation on the device: the shard is copied there once (all of CIFAR-10 is 150 MB
        # of uint8) and the batch is gathered, cropped, flipped and normalised there
        on_device = d.augment_on == "device" or (
            d.augment_on == "auto" and dist.device.type == "cuda"
        )
        out = []
        for split, limit, batch, train in (
            ("train", d.train_samples, d.batch_size, True),
            ("test", d.val_samples, d.val_batch_size, False),
        ):
            x, y = cifar10.load_split(directory, split)
            if limit is not None:
                x, y = x[:limit], y[:limit]
            idx = shard_indices(len(x), dist.rank, dist.world_size, seed=cfg.seed, equal=train)
            xs, ys = torch.from_numpy(x[idx]), torch.from_numpy(y[idx])
            if on_device:
                xs, ys = xs.to(dist.device), ys.to(dist.device)

            def transform(
                xb: torch.Tensor, gen: torch.Generator, train: bool = train
            ) -> torch.Tensor:
                if train and d.augment:
                    xb = augment.random_crop_flip(xb, gen, d.crop_padding)
                return augment.normalize(xb, d.mean, d.std)

            out.append(
                BatchLoader(
                    xs,
                    ys,
                    batch,
                    shuffle=train,
                    drop_last=train,
                    seed=cfg.seed * 1000 + dist.rank,
                    device=dist.device,
                    transform=None if on_device else transform,
                    device_transform=transform if on_device else None,
                )
            )
        return TaskData(out[0], out[1], {"classes": 10})

    def build_model(self, cfg: RunConfig, facts: dict[str, Any]) -> torch.nn.Module:
        from mlbench.models.resnet import CifarResNet

        assert isinstance(cfg, Cifar10Config)
        return CifarResNet(cfg.model.depth, facts["classes"], cfg.model.shortcut)

    def loss(
        self, output: torch.Tensor, batch: tuple[torch.Tensor, ...], model: torch.nn.Module
    ) -> torch.Tensor:
        import torch

        return torch.nn.functional.cross_entropy(output, batch[1])

    def evaluate(self, model: torch.nn.Module, val: Any, dist: DistContext) -> dict[str, float]:
        return classification_metrics(model, val, dist)
