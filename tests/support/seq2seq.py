"""Tiny translation models and a padded batch shared by the model tests (tests/unit/test_gnmt.py,
test_transformer.py, test_seq2seq_models.py): one definition, so the contract checks run on the
same models the per-model tests use."""

from __future__ import annotations

import torch

from mlbench.models.gnmt import GNMT
from mlbench.models.transformer import Transformer


def tiny_gnmt(dropout: float = 0.0) -> GNMT:
    torch.manual_seed(0)
    return GNMT(40, hidden_size=12, layers=4, dropout=dropout)


def tiny_transformer(dropout: float = 0.0) -> Transformer:
    torch.manual_seed(0)
    return Transformer(
        40,
        d_model=16,
        ffn_size=32,
        heads=4,
        encoder_layers=2,
        decoder_layers=2,
        dropout=dropout,
        attention_dropout=dropout,
        relu_dropout=dropout,
    )


def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two sentences of different lengths, PAD-padded (source ends with EOS=3)."""
    g = torch.Generator().manual_seed(1)
    src = torch.randint(4, 40, (2, 7), generator=g)
    src[:, -1] = 3
    src[1, 3] = 3
    src[1, 4:] = 0
    tgt = torch.randint(4, 40, (2, 6), generator=g)
    tgt[:, 0] = 2
    tgt[1, 4:] = 0
    return src, torch.tensor([7, 4]), tgt
