"""What tasks 4a (GNMT) and 4b (Transformer) share: the prepared corpus, the label-smoothed loss
over target tokens, and evaluation by beam search scored with exact distributed BLEU.

Evaluation (both tasks, as MLPerf): newstest2014 (the full 3,003 sentences), translated by beam
search on the current weights, detokenised, scored with sacrebleu corpus BLEU (intl tokenisation,
lowercased) against the raw ``newstest2014.de``. The test sentences are split across ranks
balanced by length; each rank scores its share and the ten sufficient statistics are all-reduced,
so the score equals the single-process corpus BLEU (the original averaged per-batch BLEU, which
overstates it by ~1.4 on length-sorted batches). The teacher-forced loss on the same sentences
(per target token, summed and counted on every rank, reduced once) is the ``loss`` the loop's
schedules and logs use.
"""

from __future__ import annotations

import functools
import math
from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

from mlbench.config import BATCH_MAX, param
from mlbench.errors import ConfigError, DataError
from mlbench.tasks.base import DataConfig, DataInfo, RunConfig, StepOut, Task, TaskData

if TYPE_CHECKING:
    import numpy as np
    import torch

    from mlbench.data.loader import Loader
    from mlbench.data.seq2seq import PairBatch
    from mlbench.data.wmt import Pairs, Prepared, Vocab
    from mlbench.dist import DistContext
    from mlbench.models.beam import Seq2Seq


@dataclass
class TranslationData(DataConfig):
    """Keys both translation tasks have (each task sets its own defaults)."""

    download: bool = param(
        False,
        open=True,
        help="unused: the WMT corpora are prepared from files you download "
        "(mlbench data prepare wmt16|wmt17 --source DIR --out DIR/NAME)",
    )
    val_batch_size: int = param(
        64, open=True, minimum=1, maximum=BATCH_MAX, help="test sentences per decoding batch"
    )
    max_len: int | None = param(
        75,
        minimum=1,
        maximum=4096,
        help="drop training pairs with a side longer than this many tokens (None: keep all)",
    )
    train_samples: int | None = param(
        None, minimum=1, help="use only the first N training pairs (non-official)"
    )
    val_samples: int | None = param(
        None, minimum=1, help="translate only the first N test sentences (non-official)"
    )


@dataclass
class DecodeConfig:
    """Beam search at evaluation (closed: they change the metric)."""

    beam: int = param(5, minimum=1, maximum=64, help="beam width")
    len_alpha: float = param(0.6, minimum=0, help="length normalisation ((5+len)/6)^α")
    coverage: float = param(0.1, minimum=0, help="GNMT coverage penalty β (0: none)")
    max_len: int = param(150, minimum=1, maximum=4096, help="longest output (tokens)")
    max_len_from_source: bool = param(
        False, help="the limit is the source length + max_len_extra instead (4b)"
    )
    max_len_extra: int = param(50, minimum=0, help="with max_len_from_source: source + N")


class TestShard:
    """This rank's share of the test set (balanced by length across ranks): batches for the
    teacher-forced loss and beam search, the raw references, and the vocabulary's decoder."""

    def __init__(
        self,
        pairs: Pairs,
        indices: np.ndarray,
        refs: list[str],
        vocab: Vocab,
        batch_size: int,
        device: torch.device,
    ) -> None:
        self.pairs, self.indices, self.refs, self.vocab = pairs, indices, refs, vocab
        self.batch_size, self.device = batch_size, device

    def __len__(self) -> int:
        return len(self.indices)

    def batches(self) -> Iterator[tuple[PairBatch, np.ndarray]]:
        """Longest first (similar lengths pad little), each with its sentences' positions."""
        from mlbench.data.seq2seq import collate, eval_batches

        for b in eval_batches(self.pairs.src, self.indices, self.batch_size):
            yield collate(self.pairs, b.positions, self.device), b.positions

    def decode(self, ids: list[int]) -> str:
        return self.vocab.decode(ids)


#: what both translation tasks do differently from the original, and why
SHARED_DEVIATIONS = (
    "BLEU is sacrebleu's corpus BLEU (intl tokenisation, lowercased, against the raw "
    "newstest2014.de, MLPerf's metric) from sufficient statistics all-reduced over the ranks: "
    "exactly the single-process corpus score. The original averaged per-batch BLEU, which "
    "overstates it (+1.4 on length-sorted batches of 64, measured on the real references).",
    "The test set is split across ranks balanced by length and decoded once; the original "
    "decoded it in full on every rank.",
    "An epoch's micro-batches that cannot fill a whole global step are left out before any "
    "work (a different random remainder every epoch); the original computed them, then "
    "discarded them.",
)


class TranslationTask(Task):
    """Shared machinery; subclasses give the config, model, optimizer, schedule and batcher."""

    unit = "tokens"
    #: what the loss is divided by: "sentences" (4a, MLPerf's GNMT) or "tokens" (4b)
    normalize_by: ClassVar[str] = "tokens"

    def __init__(self) -> None:
        self._smoothing = 0.1
        self._decode = DecodeConfig()

    # --- launcher side -----------------------------------------------------------------------
    def _folder(self, cfg: RunConfig) -> Path:
        from mlbench.data import wmt

        root = self.data_root(cfg)
        folder = wmt.find(root, cfg.data.dataset)
        if folder is None:
            raise DataError(
                f"no prepared {cfg.data.dataset} under {root}: run `mlbench data prepare "
                f"{cfg.data.dataset} --source DIR --out {root}` first (docs/data.md)"
            )
        return folder

    def prepare_data(self, cfg: RunConfig) -> DataInfo:
        """Every prepared file checked against its manifest (one error line on a mismatch,
        before any worker starts); the sizes the launcher checks a step against."""
        from mlbench.data import wmt

        folder = self._folder(cfg)
        manifest = wmt.check(folder, cfg.data.dataset)
        issues = [f"prepared from {r}" for r in manifest.get("nonofficial_reasons", [])]
        counts = manifest.get("counts", {})
        n_val = int(counts.get("test", 0))
        if cfg.data.val_samples:
            n_val = min(n_val, cfg.data.val_samples)
        n_train = self.train_size(folder, cfg)
        return DataInfo(
            n_train,
            n_val,
            f"{cfg.data.dataset} prepared in {folder} ({manifest.get('train_corpora')})",
            tuple(issues),
        )

    def train_size(self, folder: Path, cfg: RunConfig) -> int:
        """Training size in the unit ``data.batch_size`` counts (pairs; 4b: padded tokens)."""
        import numpy as np

        with np.load(folder / "train.npz", allow_pickle=False) as z:
            n = len(z["src_offsets"]) - 1
        return min(n, cfg.data.train_samples or n)

    def validate(self, cfg: RunConfig, world_size: int) -> None:
        super().validate(cfg, world_size)
        if cfg.train.normalize != "global":
            raise ConfigError(
                f"{self.name}: train.normalize must be 'global' (gradients are averaged over "
                "the global count of sentences or tokens, whatever each rank's share)"
            )
        if cfg.train.accumulate != 1:
            raise ConfigError(
                f"{self.name}: train.accumulate is derived from the global batch and the "
                "worker count; set data.global_batch (or data.batch_size) instead"
            )
        self.accumulation(cfg, world_size)  # its own errors

    def describe_goal(self, cfg: RunConfig) -> dict[str, Any]:
        from mlbench.metrics.bleu import metric

        bleu = metric()
        bleu.num_refs = 1
        return {**super().describe_goal(cfg), "signature": str(bleu.get_signature())}

    # --- worker side -------------------------------------------------------------------------
    def build_data(self, cfg: RunConfig, dist: DistContext) -> TaskData:
        """The prepared corpus (the launcher verified every checksum; a worker only reads), the
        task's batcher over the first ``data.train_samples`` pairs, this rank's test share."""
        from mlbench.data import wmt

        spec: Any = cfg  # both tasks' configs have optim.label_smoothing and decode
        self._smoothing = spec.optim.label_smoothing
        self._decode = spec.decode
        data = wmt.load_prepared(self._folder(cfg), verify=False)
        pairs, n = data.train, cfg.data.train_samples
        if n and n < len(pairs):
            pairs = wmt.Pairs(
                wmt.Ragged(pairs.src.ids, pairs.src.offsets[: n + 1]),
                wmt.Ragged(pairs.tgt.ids, pairs.tgt.offsets[: n + 1]),
            )
        train = self.batches(cfg, pairs, dist)
        return TaskData(train, self.test_shard(cfg, data, dist), {"vocab_size": data.vocab.size})

    @abstractmethod
    def batches(self, cfg: RunConfig, pairs: Pairs, dist: DistContext) -> Loader:
        """This rank's training micro-batches (4a: sentences; 4b: tokens)."""

    def test_shard(self, cfg: RunConfig, data: Prepared, dist: DistContext) -> TestShard:
        """This rank's test sentences, their references encoded on the target side for the
        teacher-forced loss (the decoded text is what BLEU scores)."""
        import numpy as np

        from mlbench.data.seq2seq import length_balanced_shards
        from mlbench.data.wmt import Pairs, Ragged

        n = len(data.test_src)
        if cfg.data.val_samples:
            n = min(n, cfg.data.val_samples)
        shard = length_balanced_shards(data.test_src.lengths[:n], dist.world_size)[dist.rank]
        tgt: list[list[int]] = [[] for _ in range(n)]
        for i in shard:
            tgt[int(i)] = data.vocab.encode_target(data.test_refs[int(i)])
        src = Ragged(data.test_src.ids, data.test_src.offsets[: n + 1])
        pairs = Pairs(src, Ragged.from_lists(tgt))
        return TestShard(
            pairs,
            np.asarray(shard),
            data.test_refs[:n],
            data.vocab,
            cfg.data.val_batch_size,
            dist.device,
        )

    def train_forward(self, model: torch.nn.Module, batch: PairBatch) -> StepOut:
        """Label-smoothed cross-entropy summed over the micro-batch's target tokens (padding
        masked), divided by its units — sentences (4a) or target tokens (4b); the loop's global
        normalisation turns that into the sum over all ranks divided by the global count."""
        import torch

        logits = model(batch.src, batch.src_len, batch.tgt_in)
        total = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)).float(),
            batch.tgt_out.reshape(-1),
            ignore_index=0,
            label_smoothing=self._smoothing,
            reduction="sum",
        )
        tokens = int((batch.tgt_out != 0).sum())
        units = tokens if self.normalize_by == "tokens" else int(batch.src.size(0))
        return StepOut(total / max(units, 1), units, counted=tokens)

    def evaluate(self, model: torch.nn.Module, val: Any, dist: DistContext) -> dict[str, float]:
        """Teacher-forced loss and beam-search BLEU on this rank's test sentences, reduced once
        each (see the module docstring)."""
        import torch

        from mlbench.metrics.bleu import distributed_bleu
        from mlbench.metrics.classification import global_sums
        from mlbench.models.beam import beam_search

        assert isinstance(val, TestShard)
        d = self._decode
        limit: Any = d.max_len
        if d.max_len_from_source:
            limit = functools.partial(_plus, extra=d.max_len_extra)
        loss_sum = torch.zeros((), dtype=torch.float64, device=dist.device)
        tokens = 0
        hyps: list[str] = []
        refs: list[str] = []
        with torch.no_grad():
            for batch, positions in val.batches():
                logits = model(batch.src, batch.src_len, batch.tgt_in)
                loss_sum += torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.size(-1)).float(),
                    batch.tgt_out.reshape(-1),
                    ignore_index=0,
                    reduction="sum",
                ).double()
                tokens += int((batch.tgt_out != 0).sum())
                out = beam_search(
                    cast("Seq2Seq", model),  # the task's own model: GNMT or Transformer
                    batch.src,
                    batch.src_len,
                    beam=d.beam,
                    max_len=limit,
                    len_alpha=d.len_alpha,
                    coverage=d.coverage,
                )
                hyps += [val.decode(ids) for ids in out]
                refs += [val.refs[int(i)] for i in positions]
        # corpus statistics are sums over sentences: any order, any split gives the same score
        bleu = distributed_bleu(hyps, refs, dist)
        total, n, sentences = global_sums([float(loss_sum), float(tokens), len(hyps)], dist)
        loss = total / max(n, 1.0)
        return {
            "loss": loss,
            "perplexity": math.exp(min(loss, 700.0)),
            "bleu": bleu.score,
            "sentences": sentences,
        }


def _plus(lengths: torch.Tensor, extra: int) -> torch.Tensor:
    """4b's decoding limit: the source length + ``extra`` tokens, per sentence."""
    return lengths + extra
