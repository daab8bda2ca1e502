"""Task 2a: linear learning — epsilon, L2-regularised logistic regression (goal 89 %, light 80 %).

Reference hyperparameters: batch 100 per worker, plain SGD (no momentum, no weight decay — the L2
term is in the loss: BCE + (l2/2)·‖w‖², l2 = 2.5e-6), lr 4·min(16, k), reduce-on-plateau on val
loss (×0.75, patience 0, abs threshold 0.01, min 4), 20 epochs max, and *model averaging after the
local step* (weights all-reduced, averaged once at start). Any LIBSVM binary dataset can be
selected with ``data.dataset`` (e.g. a9a); such a run is non-official.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from mlbench.config import BATCH_MAX, param, section
from mlbench.errors import DataError
from mlbench.tasks.base import (
    DataConfig,
    DataInfo,
    RunConfig,
    Target,
    TaskData,
    TrainConfig,
    seed_param,
)
from mlbench.tasks.common import SGDConfig, SGDTask

if TYPE_CHECKING:
    import torch

    from mlbench.dist import DistContext

OFFICIAL_SIZES = {"epsilon": (400000, 100000)}


@dataclass
class LibsvmData(DataConfig):
    dataset: str = param("epsilon", help="LIBSVM binary dataset: epsilon (official), a9a, w8a, ...")
    batch_size: int = param(
        100, minimum=1, maximum=BATCH_MAX, help="training batch size per worker"
    )
    val_batch_size: int = param(
        1000, open=True, minimum=1, maximum=BATCH_MAX, help="validation batch per worker"
    )


@dataclass
class LogRegConfig:
    l2: float = param(2.5e-6, minimum=0, help="L2 coefficient: loss += (l2/2)·‖w‖²")


@dataclass
class EpsilonConfig(RunConfig):
    task: str = param("epsilon-logreg", choices=("epsilon-logreg",))
    seed: int = seed_param(42)
    train: TrainConfig = section(lambda: TrainConfig(max_epochs=20, control_every_steps=25))
    data: LibsvmData = section(LibsvmData)
    model: LogRegConfig = section(LogRegConfig)
    optim: SGDConfig = section(
        lambda: SGDConfig(
            lr=4.0,
            lr_scaling="linear",
            lr_scaling_cap=16,
            momentum=0.0,
            weight_decay=0.0,
            warmup="none",
            schedule="plateau",
            plateau_factor=0.75,
            plateau_patience=0,
            plateau_threshold=0.01,
            min_lr=4.0,
        )
    )


class EpsilonLogReg(SGDTask):
    name = "epsilon-logreg"
    task_id = "2a"
    title = "Linear learning (epsilon, L2-regularised logistic regression)"
    dataset = "epsilon (LIBSVM; 400k train / 100k test, 2000 dense features); any LIBSVM binary set"
    model = "logistic regression, no bias"
    target = Target(metric="accuracy", value=89.0, light_value=80.0, mode="max")
    config_cls = EpsilonConfig
    unit = "samples"
    #: the reference averages the model after each local step
    scheme_defaults: ClassVar[dict[str, Any]] = {"mode": "weights"}

    def prepare_data(self, cfg: RunConfig) -> DataInfo:
        from mlbench.data import libsvm

        train_path, test_path = libsvm.ensure(
            self.data_root(cfg), cfg.data.dataset, cfg.data.download
        )
        # every line checked here, once, so bad content is exit 2 before any worker starts
        train_facts, test_facts = libsvm.check(cfg.data.dataset, train_path, test_path)
        n_train, n_val = train_facts.rows, test_facts.rows
        if n_train == 0 or n_val == 0:
            raise DataError(f"LIBSVM files {train_path} / {test_path} hold no examples")
        issues: list[str] = []
        expected = OFFICIAL_SIZES.get(cfg.data.dataset)
        if expected and (n_train, n_val) != expected:
            issues.append(
                f"{cfg.data.dataset} files hold {n_train}/{n_val} train/val rows, "
                f"the spec's has {expected[0]}/{expected[1]}"
            )
        n_train = min(n_train, cfg.data.train_samples or n_train)
        n_val = min(n_val, cfg.data.val_samples or n_val)
        return DataInfo(
            n_train, n_val, f"{cfg.data.dataset} from {train_path.parent}", tuple(issues)
        )

    def build_data(self, cfg: RunConfig, dist: DistContext) -> TaskData:
        import torch

        from mlbench.data import libsvm
        from mlbench.data.loader import BatchLoader
        from mlbench.data.partition import shard_indices

        assert isinstance(cfg, EpsilonConfig)
        d = cfg.data
        (x_train, y_train), (x_val, y_val) = libsvm.load_pair(self.data_root(cfg), d.dataset)
        loaders = []
        for x, y, limit, batch, train in (
            (x_train, y_train, d.train_samples, d.batch_size, True),
            (x_val, y_val, d.val_samples, d.val_batch_size, False),
        ):
            if limit is not None:
                x, y = x[:limit], y[:limit]
            idx = shard_indices(len(x), dist.rank, dist.world_size, seed=cfg.seed, equal=train)
            loaders.append(
                BatchLoader(
                    torch.from_numpy(x[idx]),
                    torch.from_numpy(y[idx]),
                    batch,
                    shuffle=train,
                    drop_last=train,
                    seed=cfg.seed * 1000 + dist.rank,
                    device=dist.device,
                )
            )
        return TaskData(loaders[0], loaders[1], {"n_features": x_train.shape[1]})

    def build_model(self, cfg: RunConfig, facts: dict[str, Any]) -> torch.nn.Module:
        """The feature count comes from the data files (``facts``)."""
        from mlbench.models.linear import LogisticRegression

        assert isinstance(cfg, EpsilonConfig)
        # the L2 coefficient is configuration the loss and the evaluation both read
        self.l2 = cfg.model.l2
        return LogisticRegression(facts["n_features"])

    @staticmethod
    def _l2_term(cfg_l2: float, model: torch.nn.Module) -> torch.Tensor:
        w = next(iter(model.parameters()))
        return 0.5 * cfg_l2 * (w * w).sum()

    def loss(
        self, output: torch.Tensor, batch: tuple[torch.Tensor, ...], model: torch.nn.Module
    ) -> torch.Tensor:
        import torch

        bce = torch.nn.functional.binary_cross_entropy_with_logits(output, batch[1])
        return bce + self._l2_term(self.l2, model)

    def evaluate(self, model: torch.nn.Module, val: Any, dist: DistContext) -> dict[str, float]:
        import torch

        from mlbench.metrics.classification import binary_counts, f1_from_counts, global_sums

        sums = [0.0] * 5  # bce·n, tp, fp, fn, correct ; n = correct + fp + fn
        n = 0.0
        with torch.no_grad():
            for x, y in val:
                logits = model(x)
                bce = torch.nn.functional.binary_cross_entropy_with_logits(
                    logits, y, reduction="sum"
                )
                tp, fp, fn, correct = binary_counts(logits, y)
                for i, v in enumerate((float(bce), tp, fp, fn, correct)):
                    sums[i] += v
                n += len(y)
            reg = float(self._l2_term(self.l2, model))
        # the L2 term is summed too (weighted by shard size): with schemes whose ranks hold
        # different models (local SGD, gossip) every rank must still report the same loss
        bce_sum, tp_s, fp_s, fn_s, correct_s, n, reg_sum = global_sums([*sums, n, reg * n], dist)
        n = max(n, 1.0)
        return {
            "loss": (bce_sum + reg_sum) / n,
            "accuracy": 100.0 * correct_s / n,
            "f1": 100.0 * f1_from_counts(tp_s, fp_s, fn_s),
            "samples": n,
        }
