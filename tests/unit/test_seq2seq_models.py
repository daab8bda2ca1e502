"""What the beam search and the tasks rely on from both translation models (GNMT, Transformer):
the decoding state follows its hypothesis when beams are reordered, every registered parameter
trains (a bucketed all-reduce would ship zeros for a dead one), and dropout acts only in
training. The models' own properties are in test_gnmt.py and test_transformer.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from tests.support.seq2seq import batch, tiny_gnmt, tiny_transformer

MODELS = pytest.mark.parametrize(
    ("name", "tiny", "dropout"),
    [
        pytest.param("gnmt", tiny_gnmt, 0.2, id="gnmt"),
        pytest.param("transformer", tiny_transformer, 0.1, id="transformer"),
    ],
)


@MODELS
def test_reorder_state_selects_rows(
    name: str, tiny: Callable[..., torch.nn.Module], dropout: float
) -> None:
    model: torch.nn.Module = tiny().eval()
    src, src_len, tgt = batch()
    state = model.encode(src, src_len)
    _, state, _ = model.decode_step(tgt[:, 0], state)
    flipped = model.reorder_state(state, torch.tensor([1, 0, 1]))
    lp2, _, _ = model.decode_step(tgt[[1, 0, 1], 1], flipped)
    lp1, _, _ = model.decode_step(tgt[:, 1], state)
    torch.testing.assert_close(lp2, lp1[[1, 0, 1]])


@MODELS
def test_every_parameter_gets_a_gradient(
    name: str, tiny: Callable[..., torch.nn.Module], dropout: float
) -> None:
    model = tiny(dropout=dropout).train()
    src, src_len, tgt = batch()
    logits = model(src, src_len, tgt)
    F.cross_entropy(logits.reshape(-1, 40), torch.randint(4, 40, (12,))).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, pname


@MODELS
def test_dropout_only_in_training(
    name: str, tiny: Callable[..., torch.nn.Module], dropout: float
) -> None:
    model = tiny(dropout=dropout)
    src, src_len, tgt = batch()
    model.eval()
    torch.testing.assert_close(model(src, src_len, tgt), model(src, src_len, tgt), rtol=0, atol=0)
    model.train()
    assert not torch.equal(model(src, src_len, tgt), model(src, src_len, tgt))


@MODELS
def test_shapes_and_padding_invariance(
    name: str, tiny: Callable[..., torch.nn.Module], dropout: float
) -> None:
    """A sentence's logits do not change when it is batched with a longer one (masks)."""
    model = tiny().eval()
    src, src_len, tgt = batch()
    logits = model(src, src_len, tgt)
    assert logits.shape == (2, 6, 40)
    alone = model(src[1:, :4], src_len[1:], tgt[1:, :4])
    torch.testing.assert_close(logits[1, :4], alone[0], atol=1e-5, rtol=1e-5)
