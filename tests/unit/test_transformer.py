"""Transformer big (pre-norm): the reference size, masks, the KV cache, and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mlbench.errors import ConfigError
from mlbench.models.transformer import Transformer, sinusoidal_positions
from tests.support.seq2seq import batch
from tests.support.seq2seq import tiny_transformer as tiny

V = 33_712


def transformer_count(v: int, d: int, ffn: int, enc: int, dec: int) -> int:
    linear = d * d + d
    attention = 4 * linear  # q, k, v, out with biases
    feed_forward = (d * ffn + ffn) + (ffn * d + d)
    norm = 2 * d
    encoder_layer = attention + feed_forward + 2 * norm
    decoder_layer = 2 * attention + feed_forward + 3 * norm
    # one shared embedding (also the output projection, no bias); two final LayerNorms
    return v * d + enc * encoder_layer + dec * decoder_layer + 2 * norm


def test_the_reference_model_has_210_882_560_parameters() -> None:
    with torch.device("meta"):
        model = Transformer(V)
    count = sum(p.numel() for p in model.parameters())
    assert count == transformer_count(V, 1024, 4096, 6, 6) == 210_882_560
    assert 210_000_000 <= count <= 211_500_000
    names = {n for n, _ in model.named_parameters()}
    assert "encoder_norm.weight" in names and "decoder_norm.weight" in names
    assert not any("embed" in n and n != "embedding.weight" for n in names)  # all shared
    assert sum(p.numel() for p in tiny().parameters()) == transformer_count(40, 16, 32, 2, 2)


def test_positions_and_configuration() -> None:
    pe = sinusoidal_positions(3, 4)
    assert pe[0].tolist() == [0.0, 1.0, 0.0, 1.0]
    assert pe[2, 2].item() == pytest.approx(torch.sin(torch.tensor(2 / 100.0)).item())
    torch.testing.assert_close(sinusoidal_positions(2, 4, offset=1), pe[1:])
    with pytest.raises(ConfigError):
        Transformer(40, d_model=16, heads=3)


def test_the_decoder_is_causal() -> None:
    model = tiny().eval()
    src, src_len, tgt = batch()
    changed = tgt.clone()
    changed[:, 3] = 5  # position 3's input: outputs 0-2 must not see it
    a, b = model(src, src_len, tgt), model(src, src_len, changed)
    torch.testing.assert_close(a[:, :3], b[:, :3])
    assert not torch.allclose(a[:, 3:], b[:, 3:])


def test_the_kv_cache_gives_the_teacher_forced_log_probs() -> None:
    model = tiny().eval()
    src, src_len, tgt = batch()
    full = F.log_softmax(model(src, src_len, tgt), dim=-1)
    state = model.encode(src, src_len)
    steps = []
    for t in range(tgt.size(1)):
        lp, state, attention = model.decode_step(tgt[:, t], state)
        assert attention is None
        steps.append(lp)
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=1e-5)
    assert state.cache is not None and state.cache[0][0].shape == (2, 4, 6, 4)
