"""Both translation models memorise a few dozen real Multi30k pairs and beam search gives them
back: training, teacher forcing, the cached decoder and the search work together."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import pytest
import sacrebleu
import torch
import torch.nn.functional as F
from torch import nn

from mlbench.models.beam import beam_search
from mlbench.models.gnmt import GNMT
from mlbench.models.transformer import Transformer

PAIRS = 32
MAX_WORDS = 10
SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]  # ids 0-3: PAD, UNK, BOS, EOS


def short_pairs(folder: Path) -> list[tuple[list[str], list[str]]]:
    with (
        gzip.open(folder / "train.en.gz", "rt") as en,
        gzip.open(folder / "train.de.gz", "rt") as de,
    ):
        pairs = []
        for e, d in zip(en, de, strict=True):
            src, tgt = e.split(), d.split()
            if len(src) <= MAX_WORDS and len(tgt) <= MAX_WORDS:
                pairs.append((src, tgt))
            if len(pairs) == PAIRS:
                return pairs
    raise AssertionError("Multi30k has too few short pairs")


def tensors(
    pairs: list[tuple[list[str], list[str]]],
) -> tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A shared word vocabulary and the padded batch: src + EOS, BOS + tgt, tgt + EOS."""
    words = sorted({w for s, t in pairs for w in s + t})
    itos = SPECIALS + words
    stoi = {w: i for i, w in enumerate(itos)}
    n, s, t = len(pairs), MAX_WORDS + 1, MAX_WORDS + 1
    src = torch.zeros(n, s, dtype=torch.long)
    tgt_in = torch.zeros(n, t, dtype=torch.long)
    tgt_out = torch.zeros(n, t, dtype=torch.long)
    src_len = torch.zeros(n, dtype=torch.long)
    for i, (a, b) in enumerate(pairs):
        ia, ib = [stoi[w] for w in a], [stoi[w] for w in b]
        src[i, : len(ia) + 1] = torch.tensor([*ia, 3])
        src_len[i] = len(ia) + 1
        tgt_in[i, : len(ib) + 1] = torch.tensor([2, *ib])
        tgt_out[i, : len(ib) + 1] = torch.tensor([*ib, 3])
    return itos, src, src_len, tgt_in, tgt_out


def build(kind: str, vocab: int) -> tuple[nn.Module, float, float]:
    """The tiny model, its learning rate and its coverage penalty factor."""
    torch.manual_seed(0)
    if kind == "gnmt":
        return GNMT(vocab, hidden_size=32, layers=4, dropout=0.0), 1e-2, 0.1
    model = Transformer(
        vocab,
        d_model=64,
        ffn_size=128,
        heads=4,
        encoder_layers=2,
        decoder_layers=2,
        dropout=0.0,
        attention_dropout=0.0,
        relu_dropout=0.0,
    )
    return model, 3e-3, 0.0


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny matrices: intra-op threads only add overhead, and on a busy 2-vCPU machine they
    made these few hundred steps 20× slower (measured: 48 s against 2 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("kind", ["gnmt", "transformer"])
def test_memorised_pairs_decode_with_bleu_above_90(real_wmt: Path, kind: str) -> None:
    pairs = short_pairs(real_wmt / "multi30k")
    itos, src, src_len, tgt_in, tgt_out = tensors(pairs)
    model, lr, coverage = build(kind, len(itos))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(400):
        loss = F.cross_entropy(model(src, src_len, tgt_in).flatten(0, 1), tgt_out.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 0.01:
            break
    assert loss.item() < 0.05

    model.eval()
    found = beam_search(
        model, src, src_len, beam=5, max_len=lambda n: n + 10, len_alpha=0.6, coverage=coverage
    )
    hyps = [" ".join(itos[i] for i in ids) for ids in found]
    refs = [" ".join(t) for _, t in pairs]
    bleu = sacrebleu.corpus_bleu(hyps, [refs]).score
    assert bleu > 90, (bleu, hyps[:3])
