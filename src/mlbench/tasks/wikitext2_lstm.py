"""Task 3a: language modelling, WikiText-2 with AWD-LSTM (goal: val perplexity ≤ 70, light 90).

Reference hyperparameters (../shared/reference/MLBENCH.md, "3a"): AWD-LSTM with embedding 400,
three LSTM layers 400→1150→1150→400, tied decoder (33,556,078 parameters at the 33,278-word
vocabulary); locked dropout 0.65 (input) / 0.2 (between layers) / 0.4 (output), embedding
dropout 0.1, weight drop 0.5; loss = cross-entropy + AR (α 2) + TAR (β 1). Batch 20 columns per
worker (the stream cut into 20·k columns), BPTT 70 with random window lengths shared by every
rank, the step's lr × seq_len/70; SGD lr 15·√k, weight decay 1.2e-6, gradients averaged then
clipped to norm 0.25; 750 epochs max; seed 43. Validation: 10 columns, windows of 70, state
carried, split over ranks by columns (exact: the metric does not depend on k).

The hidden state is carried from one window to the next on each rank (it is this rank's columns'
state), detached every step and reset to zero at each epoch start.

**NT-ASGD** (non-monotonically triggered averaged SGD): after each validation, once more than
``nonmono`` (5) losses are recorded and the current one is above the minimum of all but the last
5, training switches to averaged SGD: the steps stay plain SGD steps, and a running mean of the
weights after every step from then on is kept; validation from then on uses the mean weights
(swapped in and back). The decision uses the all-reduced validation loss, so every rank switches
at the same step. Two documented departures from the original: torch's ``ASGD`` applies the
per-window lr one step late, so the mean here is kept in-house and is exact; and the lr after the
switch stays 15·√k (the original restarts at 15, dropping the √k — a k-dependent jump).

Throughput is counted in target tokens.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from mlbench.config import BATCH_MAX, param, section
from mlbench.errors import ConfigError
from mlbench.tasks.base import (
    DataConfig,
    DataInfo,
    RunConfig,
    StepOut,
    Target,
    Task,
    TaskData,
    TrainConfig,
    seed_param,
)

if TYPE_CHECKING:
    import torch

    from mlbench.dist import DistContext
    from mlbench.models.awd_lstm import Hidden
    from mlbench.schedules import Schedule


@dataclass
class WikiText2Data(DataConfig):
    dataset: str = param("wikitext2", choices=("wikitext2",), help="WikiText-2 (wikitext-2-v1)")
    download: bool = param(
        False, open=True, help="unused: WikiText-2 has no stable official URL; put files in place"
    )
    batch_size: int = param(
        20, minimum=1, maximum=BATCH_MAX, help="training columns per worker (20·k in all)"
    )
    val_batch_size: int = param(
        10,
        minimum=1,
        maximum=BATCH_MAX,
        help="validation columns in all (split over the ranks); closed: it changes the metric",
    )
    bptt: int = param(70, minimum=1, help="window length (training base, validation fixed)")
    bptt_p_full: float = param(
        0.95, minimum=0, maximum=1, help="training: probability of bptt, else bptt/2"
    )
    bptt_sigma: float = param(5.0, minimum=0, help="training: sd of the length around its base")
    bptt_min: int = param(5, minimum=1, help="training: shortest window")
    train_samples: int | None = param(
        None, minimum=3, help="use only the first N training tokens (non-official)"
    )
    val_samples: int | None = param(
        None, minimum=2, help="use only the first N validation tokens (non-official)"
    )


@dataclass
class AWDLSTMConfig:
    embedding_size: int = param(400, minimum=1, help="embedding width (= last LSTM width, tied)")
    hidden_size: int = param(1150, minimum=1, help="width of the inner LSTM layers")
    layers: int = param(3, minimum=1, maximum=16, help="separate single-layer LSTMs")
    tie_weights: bool = param(True, help="decoder weight = embedding matrix")
    dropout: float = param(0.4, minimum=0, maximum=0.99, help="locked dropout on the output")
    dropouth: float = param(0.2, minimum=0, maximum=0.99, help="locked dropout between layers")
    dropouti: float = param(0.65, minimum=0, maximum=0.99, help="locked dropout on embeddings")
    dropoute: float = param(0.1, minimum=0, maximum=0.99, help="embedding dropout (whole words)")
    wdrop: float = param(0.5, minimum=0, maximum=0.99, help="weight drop on hidden-to-hidden")
    alpha: float = param(2.0, minimum=0, help="AR: α·mean(last dropped output²)")
    beta: float = param(1.0, minimum=0, help="TAR: β·mean(last raw output's step change²)")


@dataclass
class NTASGDConfig:
    """SGD, then averaged SGD from the non-monotone trigger on (see the module docstring)."""

    lr: float = param(15.0, minimum=0, help="base learning rate (for one worker)")
    lr_scaling: Literal["sqrt", "linear", "none"] = param(
        "sqrt", help="how the lr grows with k workers (the reference: 15·√k)"
    )
    weight_decay: float = param(1.2e-6, minimum=0)
    ntasgd: bool = param(True, help="switch to averaged SGD on the non-monotone trigger")
    nonmono: int = param(
        5, minimum=0, help="switch when the val loss exceeds the best of all but the last N"
    )
    switch_at_eval: int | None = param(
        None, minimum=1, help="force the switch at the N-th evaluation (tests, ablations)"
    )


@dataclass
class WikiText2Config(RunConfig):
    task: str = param("wikitext2-lstm", choices=("wikitext2-lstm",))
    seed: int = seed_param(43)
    train: TrainConfig = section(lambda: TrainConfig(max_epochs=750, clip_grad_norm=0.25))
    data: WikiText2Data = section(WikiText2Data)
    model: AWDLSTMConfig = section(AWDLSTMConfig)
    optim: NTASGDConfig = section(NTASGDConfig)


class WikiText2LSTM(Task):
    name = "wikitext2-lstm"
    task_id = "3a"
    title = "Language modelling (WikiText-2, AWD-LSTM)"
    dataset = "WikiText-2 (wikitext-2-v1, word level: 2,088,628 train tokens, vocabulary 33,278)"
    model = "AWD-LSTM, 3 layers 400-1150-1150-400, tied weights (33.56M parameters)"
    target = Target(metric="perplexity", value=70.0, light_value=90.0, mode="min")
    config_cls = WikiText2Config
    unit = "tokens"
    deviations = (
        "Averaged SGD keeps its own running mean of the weights after every step from the "
        "NT-ASGD switch on, not torch's ASGD: ASGD applies each step's lr (× seq_len/70) one "
        "step late, so its mean would not be the mean of the weights actually trained.",
        "After the NT-ASGD switch the lr stays 15·√k; the original restarts at 15, dropping the "
        "√k, a jump whose size depends on the worker count k.",
        "Validation is split across ranks: each takes a contiguous block of the reference's 10 "
        "columns and the summed (loss·tokens, tokens) are all-reduced, so the perplexity is "
        "exactly the single-worker one for any k at 1/k of the cost; the original evaluated the "
        "whole validation set on every rank.",
        "The lr factor is the window's real length ÷ 70; the reference used the drawn length, "
        "which differs only for an epoch's last window when the end of the stream cuts it, and "
        "whose mean loss covers only the real tokens.",
    )

    def __init__(self) -> None:
        #: this rank's LSTM state after the last training window (None: zero at the next one)
        self._hidden: Hidden | None = None
        self._bptt = 70
        self._alpha, self._beta = 2.0, 1.0
        #: set by eval_context while the averaged weights are swapped in (reported as a metric)
        self._on_average = False

    def validate(self, cfg: RunConfig, world_size: int) -> None:
        from mlbench.data import wikitext2

        super().validate(cfg, world_size)
        assert isinstance(cfg, WikiText2Config)
        d = cfg.data
        tokens = min(wikitext2.TOKENS["train"], d.train_samples or wikitext2.TOKENS["train"])
        if tokens // (d.batch_size * world_size) < 3:
            raise ConfigError(
                f"{tokens} training tokens in {d.batch_size}·{world_size} columns leave fewer "
                "than 3 rows: too few for one window (raise data.train_samples)"
            )

    def prepare_data(self, cfg: RunConfig) -> DataInfo:
        from mlbench.data import wikitext2

        directory = wikitext2.ensure(self.data_root(cfg))  # checksums: a mismatch is an error
        train = min(wikitext2.TOKENS["train"], cfg.data.train_samples or wikitext2.TOKENS["train"])
        val = min(wikitext2.TOKENS["valid"], cfg.data.val_samples or wikitext2.TOKENS["valid"])
        return DataInfo(train, val, f"WikiText-2 from {directory} (tokens)")

    def build_data(self, cfg: RunConfig, dist: DistContext) -> TaskData:
        from mlbench.data import bptt, wikitext2

        assert isinstance(cfg, WikiText2Config)
        d = cfg.data
        directory = wikitext2.find(self.data_root(cfg))
        if directory is None:
            raise ConfigError(f"WikiText-2 not found under {d.dir}")
        corpus = wikitext2.load(directory)
        rank, k, device = dist.rank, dist.world_size, dist.device
        draw = bptt.WindowDraw(d.bptt, d.bptt_p_full, d.bptt_sigma, d.bptt_min)
        train_stream = corpus.train[: d.train_samples]
        train = bptt.TrainWindows(
            train_stream, d.batch_size, rank, k, seed=cfg.seed, draw=draw, device=device
        )
        val_stream = corpus.valid[: d.val_samples]
        val = bptt.EvalWindows(val_stream, d.val_batch_size, rank, k, bptt=d.bptt, device=device)
        return TaskData(train, val, {"vocab_size": corpus.vocab_size})

    def build_model(self, cfg: RunConfig, facts: dict[str, Any]) -> torch.nn.Module:
        from mlbench.models.awd_lstm import AWDLSTM

        assert isinstance(cfg, WikiText2Config)
        m = cfg.model
        # what train_forward reads per step: configuration, kept beside the carried state
        self._bptt, self._alpha, self._beta = cfg.data.bptt, m.alpha, m.beta
        return AWDLSTM(
            facts["vocab_size"],
            embedding_size=m.embedding_size,
            hidden_size=m.hidden_size,
            layers=m.layers,
            dropout=m.dropout,
            dropouth=m.dropouth,
            dropouti=m.dropouti,
            dropoute=m.dropoute,
            wdrop=m.wdrop,
            tie_weights=m.tie_weights,
        )

    def build_optimizer(
        self, cfg: RunConfig, model: torch.nn.Module, world_size: int
    ) -> torch.optim.Optimizer:
        from mlbench.schedules import AveragingSGD

        assert isinstance(cfg, WikiText2Config)
        lr = self._scaled_lr(cfg, world_size)
        return AveragingSGD(model.parameters(), lr=lr, weight_decay=cfg.optim.weight_decay)

    def build_schedule(
        self,
        cfg: RunConfig,
        optimizer: torch.optim.Optimizer,
        world_size: int,
        steps_per_epoch: int,
        lr_scale: float = 1.0,
    ) -> Schedule:
        from mlbench.schedules import NTASGDSchedule

        assert isinstance(cfg, WikiText2Config)
        o = cfg.optim
        return NTASGDSchedule(
            optimizer,
            lr=self._scaled_lr(cfg, world_size) * lr_scale,
            nonmono=o.nonmono if o.ntasgd else None,
            switch_at_eval=o.switch_at_eval,
        )

    @staticmethod
    def _scaled_lr(cfg: WikiText2Config, world_size: int) -> float:
        """The lr for k workers (15·√k by default), before and after the NT-ASGD switch alike;
        each step multiplies it by its window's length / bptt."""
        from mlbench.schedules import scaled_lr

        return scaled_lr(cfg.optim.lr, world_size, cfg.optim.lr_scaling, None)

    def eval_context(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer
    ) -> contextlib.AbstractContextManager[None]:
        """After the switch: evaluate on the running mean of the weights, then put the trained
        weights back (the next step continues from them, as the reference does)."""
        return self._averaged(optimizer)

    @contextlib.contextmanager
    def _averaged(self, optimizer: torch.optim.Optimizer) -> Iterator[None]:
        from mlbench.schedules import AveragingSGD

        # a scheme with its own optimizer (centralized Adam) has no average: evaluate as is
        if not isinstance(optimizer, AveragingSGD) or not optimizer.averaged_steps:
            yield
            return
        with optimizer.swap_in_average():
            self._on_average = True
            try:
                yield
            finally:
                self._on_average = False

    def start_epoch(self, epoch: int) -> None:
        """Every column starts the epoch from a zero state, as the reference does."""
        self._hidden = None

    def state_dict(self) -> dict[str, Any]:
        """The carried LSTM state (per rank): a resume inside an epoch continues every column
        from it, as the uninterrupted run does (None at an epoch's start)."""
        return {"hidden": None if self._hidden is None else [list(h) for h in self._hidden]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        hidden = state["hidden"]
        self._hidden = None if hidden is None else [(h[0], h[1]) for h in hidden]

    def train_forward(self, model: torch.nn.Module, batch: Any) -> StepOut:
        """One window: the carried state in, the new state kept (detached: truncated BPTT), loss =
        mean cross-entropy over the window's targets + AR + TAR; the lr is scaled by the window's
        length / bptt (a short window's mean-loss gradient counts for fewer tokens)."""
        import torch

        from mlbench.models.awd_lstm import activation_regularization, detach_hidden

        inputs, targets, seq_len = batch
        out = model(inputs, self._hidden)
        self._hidden = detach_hidden(out.hidden)
        logits = out.logits
        ce = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        loss = ce + activation_regularization(out, self._alpha, self._beta)
        return StepOut(loss, targets.numel(), lr_factor=seq_len / self._bptt)

    def evaluate(self, model: torch.nn.Module, val: Any, dist: DistContext) -> dict[str, float]:
        """Summed cross-entropy and target count over this rank's columns, reduced once: the
        perplexity of the whole validation stream as one worker with 10 columns measures it."""
        import torch

        from mlbench.metrics.classification import global_sums

        total = torch.zeros((), dtype=torch.float64, device=dist.device)
        hidden = None
        with torch.no_grad():
            for inputs, targets, _ in val:
                out = model(inputs, hidden)
                hidden = out.hidden
                logits = out.logits
                total += torch.nn.functional.cross_entropy(
                    logits.view(-1, logits.size(-1)), targets.view(-1), reduction="sum"
                ).double()
        loss_sum, n = global_sums([float(total), float(val.targets)], dist)
        n = max(n, 1.0)
        loss = loss_sum / n
        return {
            "loss": loss,
            "perplexity": math.exp(min(loss, 700.0)),
            "tokens": n,
            "averaged": 1.0 if self._on_average else 0.0,
        }
