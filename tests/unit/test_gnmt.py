"""GNMT v2: the reference size, padding invariance, the carried decoder state, and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mlbench.errors import ConfigError
from mlbench.models.gnmt import GNMT
from tests.support.seq2seq import batch
from tests.support.seq2seq import tiny_gnmt as tiny

V = 32_320


def lstm(inp: int, hidden: int) -> int:
    """An ``nn.LSTM`` layer: four gates, input and recurrent weights, two bias vectors."""
    return 4 * hidden * (inp + hidden) + 2 * 4 * hidden


def gnmt_count(v: int, h: int, layers: int) -> int:
    embedding = v * h
    encoder = 2 * lstm(h, h) + lstm(2 * h, h) + (layers - 2) * lstm(h, h)
    attention = 2 * h * h + h + 1 + h  # W_q, W_k, v, g, b
    decoder = lstm(h, h) + (layers - 1) * lstm(2 * h, h)
    classifier = h * v + v
    return embedding + encoder + attention + decoder + classifier


def test_the_reference_model_has_160_671_297_parameters() -> None:
    with torch.device("meta"):
        model = GNMT(V)
    count = sum(p.numel() for p in model.parameters())
    assert count == gnmt_count(V, 1024, 4) == 160_671_297
    assert 160_000_000 <= count <= 161_500_000
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    assert shapes["encoder.0.weight_ih_l0_reverse"] == (4096, 1024)
    assert shapes["encoder.1.weight_ih_l0"] == (4096, 2048)
    assert shapes["decoder.0.weight_ih_l0"] == (4096, 1024)
    assert shapes["decoder.3.weight_ih_l0"] == (4096, 2048)
    assert shapes["classifier.weight"] == (V, 1024)
    # the formula holds at other sizes too (so it is not fitted to one number)
    assert sum(p.numel() for p in GNMT(40, hidden_size=6, layers=3).parameters()) == gnmt_count(
        40, 6, 3
    )


@torch.no_grad()
def test_initialisation_and_configuration() -> None:
    model = tiny()
    assert model.attention.g.item() == pytest.approx(1 / 12**0.5)
    assert float(model.attention.b.abs().max()) == 0.0
    assert float(model.classifier.weight.abs().max()) <= 0.1
    assert float(model.embedding.weight[0].abs().max()) == 0.0
    with pytest.raises(ConfigError):
        GNMT(40, hidden_size=8, layers=1)


@torch.no_grad()
def test_decode_step_carries_the_state_like_teacher_forcing() -> None:
    model = tiny().eval()
    src, src_len, tgt = batch()
    full = F.log_softmax(model(src, src_len, tgt), dim=-1)
    state = model.encode(src, src_len)
    steps, attn = [], []
    for t in range(tgt.size(1)):
        lp, state, a = model.decode_step(tgt[:, t], state)
        steps.append(lp)
        attn.append(a)
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=1e-5)
    a = torch.stack(attn, 1)
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 6))
    assert float(a[1, :, 4:].abs().max()) == 0.0  # padded source positions get no attention


@torch.no_grad()
def test_layers_from_the_third_on_are_residual() -> None:
    """An LSTM with all-zero weights outputs zeros, so behind a residual connection it is the
    identity: a 4-layer model whose fourth encoder and decoder layers are zeroed computes what
    the 3-layer model with the same other weights computes."""
    four = tiny().eval()
    for lstm in (four.encoder[3], four.decoder[3]):
        for p in lstm.parameters():
            p.zero_()
    three = GNMT(40, hidden_size=12, layers=3, dropout=0.0).eval()
    three.load_state_dict(
        {k: v for k, v in four.state_dict().items() if not k.startswith(("encoder.3", "decoder.3"))}
    )
    src, src_len, tgt = batch()
    torch.testing.assert_close(four(src, src_len, tgt), three(src, src_len, tgt))


def test_runs_under_cpu_fp16_autocast() -> None:
    """oneDNN has no fp16 LSTM on CPU: the LSTMs run in fp32 there, the rest in fp16."""
    model = tiny()
    src, src_len, tgt = batch()
    with torch.autocast("cpu", dtype=torch.float16):
        logits = model(src, src_len, tgt)
    assert logits.dtype == torch.float16
    logits.float().sum().backward()
    assert model.encoder[0].weight_ih_l0.grad is not None
