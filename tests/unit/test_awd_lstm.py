"""AWD-LSTM: the reference's size, regularisers that are on only in training, and a weight drop
whose raw hidden-to-hidden weight really trains."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mlbench.models.awd_lstm import (
    AWDLSTM,
    LMOutput,
    WeightDropLSTM,
    activation_regularization,
    detach_hidden,
    embedding_dropout,
    locked_dropout,
)

V = 33_278


def small(**kw: float) -> AWDLSTM:
    torch.manual_seed(0)
    return AWDLSTM(50, embedding_size=8, hidden_size=12, **kw)  # type: ignore[arg-type]


def test_the_reference_model_has_33_556_078_parameters() -> None:
    model = AWDLSTM(V)
    assert sum(p.numel() for p in model.parameters()) == 33_556_078
    assert model.decoder.weight is model.encoder.weight  # tied: counted once
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    assert shapes["encoder.weight"] == (V, 400)
    assert shapes["rnns.0.lstm.weight_ih_l0"] == (4600, 400)
    assert shapes["rnns.1.lstm.weight_hh_l0"] == (4600, 1150)
    assert shapes["rnns.2.lstm.weight_hh_l0"] == (1600, 400)
    assert shapes["decoder.bias"] == (V,)
    # no leftover of a weight-drop implementation: only the LSTMs' own four tensors per layer
    assert len(shapes) == 1 + 3 * 4 + 1
    # untied: the last layer is as wide as the others and the decoder has its own weight
    untied = AWDLSTM(50, embedding_size=8, hidden_size=12, tie_weights=False)
    assert untied.widths == [12, 12, 12]
    assert untied.decoder.weight is not untied.encoder.weight
    lstms = (4 * 12 * (8 + 12 + 2)) + 2 * (4 * 12 * (12 + 12 + 2))
    assert sum(p.numel() for p in untied.parameters()) == 50 * 8 + lstms + 12 * 50 + 50


def test_every_parameter_gets_a_gradient_from_one_backward() -> None:
    """With every regulariser on, each registered tensor (the raw hidden-to-hidden weights too)
    gets a non-zero gradient: nothing would be all-reduced as zeros or left untrained."""
    model = small()
    model.train()
    words = torch.randint(0, 50, (7, 3))
    out = model(words)
    loss = F.cross_entropy(out.logits.view(-1, 50), torch.randint(0, 50, (21,)))
    (loss + activation_regularization(out, 2.0, 1.0)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
        assert isinstance(p, nn.Parameter)


def test_weight_drop_gradient_is_the_masked_gradient_of_the_dropped_weight() -> None:
    """The raw weight's gradient equals (mask/(1−p)) × the gradient a plain LSTM gets when it
    holds the dropped weight: the drop is in the graph and the Parameter is what trains."""
    torch.manual_seed(1)
    layer = WeightDropLSTM(4, 6, 0.5).train()
    x = torch.randn(5, 2, 4)
    state = (torch.zeros(1, 2, 6), torch.zeros(1, 2, 6))
    torch.manual_seed(7)
    y, _ = layer(x, state)
    y.pow(2).sum().backward()
    raw_grad = layer.lstm.weight_hh_l0.grad
    assert raw_grad is not None

    torch.manual_seed(7)  # the same draw: the forward's first random op is the weight's mask
    scale = F.dropout(torch.ones(24, 6), 0.5, training=True)  # 0 or 1/(1−p)
    plain = copy.deepcopy(layer.lstm)
    plain.zero_grad()
    with torch.no_grad():
        plain.weight_hh_l0.mul_(scale)
    y2, _ = plain(x, state)
    assert torch.allclose(y, y2, atol=1e-6)
    y2.pow(2).sum().backward()
    assert plain.weight_hh_l0.grad is not None
    assert torch.allclose(raw_grad, plain.weight_hh_l0.grad * scale, atol=1e-6)
    dropped = scale == 0
    assert 0.3 < dropped.float().mean() < 0.7
    assert (raw_grad[dropped] == 0).all() and (raw_grad[~dropped] != 0).any()
    # after the call the module holds its Parameter again, unchanged
    assert isinstance(layer.lstm.weight_hh_l0, nn.Parameter)
    assert layer.lstm.weight_hh_l0 is layer.lstm._parameters["weight_hh_l0"]


def test_weight_drop_is_off_in_eval_and_changes_training_outputs() -> None:
    layer = WeightDropLSTM(4, 6, 0.5)
    x = torch.randn(5, 2, 4)
    state = (torch.zeros(1, 2, 6), torch.zeros(1, 2, 6))
    layer.eval()
    assert torch.equal(layer(x, state)[0], layer.lstm(x, state)[0])
    layer.train()
    assert not torch.allclose(layer(x, state)[0], layer(x, state)[0])
    with pytest.raises(ValueError, match="weight_drop"):
        WeightDropLSTM(4, 6, 1.0)


def test_dropout_off_in_eval_gives_deterministic_outputs() -> None:
    model = small()
    words = torch.randint(0, 50, (6, 4))
    model.eval()
    a, b = model(words), model(words)
    assert torch.equal(a.logits, b.logits)
    for x, y in zip(a.raw + a.dropped, b.raw + b.dropped, strict=True):
        assert torch.equal(x, y)
    assert torch.equal(a.dropped[-1], a.raw[-1])  # no dropout at all in eval
    model.train()
    c, d = model(words), model(words)
    assert not torch.allclose(c.logits, d.logits)
    # each regulariser on its own makes training outputs random
    for kw in ("dropout", "dropouth", "dropouti", "dropoute", "wdrop"):
        only = {k: 0.0 for k in ("dropout", "dropouth", "dropouti", "dropoute", "wdrop")}
        only[kw] = 0.5
        m = small(**only).train()
        assert not torch.allclose(m(words).logits, m(words).logits), kw


def test_locked_dropout_shares_its_mask_over_time() -> None:
    x = torch.ones(9, 3, 5)
    y = locked_dropout(x, 0.5, training=True)
    assert torch.equal(y, y[:1].expand_as(y))  # the same mask at every step
    assert set(y.unique().tolist()) <= {0.0, 2.0}
    assert locked_dropout(x, 0.5, training=False) is x


def test_embedding_dropout_drops_whole_words() -> None:
    torch.manual_seed(3)
    emb = nn.Embedding(20, 4)
    words = torch.arange(20).repeat(3, 1)  # every word in every column
    y = embedding_dropout(emb, words, 0.5, training=True)
    ratio = y / emb(words)
    # one factor per word (0 or 2), the same wherever that word occurs
    per_word = ratio[0, :, 0]
    assert set(per_word.round().tolist()) == {0.0, 2.0}
    assert torch.allclose(ratio, per_word.view(1, 20, 1).expand_as(ratio))
    assert torch.equal(embedding_dropout(emb, words, 0.5, training=False), emb(words))


def test_hidden_state_shapes_and_detach() -> None:
    model = small()
    hidden = model.init_hidden(3)
    assert [tuple(h.shape) for h, _ in hidden] == [(1, 3, 12), (1, 3, 12), (1, 3, 8)]
    assert all(h.abs().sum() == 0 and c.abs().sum() == 0 for h, c in hidden)
    out = model(torch.randint(0, 50, (4, 3)), hidden)
    assert out.logits.shape == (4, 3, 50)
    assert [tuple(c.shape) for _, c in out.hidden] == [(1, 3, 12), (1, 3, 12), (1, 3, 8)]
    assert all(h.grad_fn is not None for h, _ in out.hidden)
    kept = detach_hidden(out.hidden)
    for (h, c), (h0, c0) in zip(kept, out.hidden, strict=True):
        assert h.grad_fn is None and c.grad_fn is None and not h.requires_grad
        assert torch.equal(h, h0) and torch.equal(c, c0)
    # a carried state changes the next window's output (it is really used)
    model.eval()
    words = torch.randint(0, 50, (4, 3))
    assert not torch.allclose(model(words, kept).logits, model(words).logits)


def test_ar_and_tar_terms() -> None:
    raw = [torch.tensor([[[1.0]], [[3.0]], [[6.0]]])]  # T=3, B=1, H=1
    dropped = [torch.tensor([[[2.0]], [[0.0]], [[2.0]]])]
    o = LMOutput(torch.zeros(3, 1, 2), [], raw, dropped)
    # AR: 2·mean(4, 0, 4) = 16/3; TAR: 1·mean(2², 3²) = 6.5
    assert activation_regularization(o, 2.0, 1.0).item() == pytest.approx(16 / 3 + 6.5)
    one = LMOutput(torch.zeros(1, 1, 2), [], [raw[0][:1]], [dropped[0][:1]])
    assert activation_regularization(one, 2.0, 1.0).item() == pytest.approx(8.0)


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="layers"):
        AWDLSTM(10, layers=0)
    with pytest.raises(ValueError, match="dropouti"):
        AWDLSTM(10, dropouti=1.0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_it_runs_under_cpu_autocast(dtype: torch.dtype) -> None:
    """oneDNN has no fp16 LSTM on CPU: the layers fall back to fp32 there; bf16 runs as is."""
    model = small().train()
    words = torch.randint(0, 50, (5, 2))
    with torch.autocast("cpu", dtype=dtype):
        out = model(words)
        loss = out.logits.float().logsumexp(-1).mean() + activation_regularization(out, 2.0, 1.0)
    loss.backward()
    assert torch.isfinite(loss)
    assert out.raw[0].dtype == (torch.float32 if dtype == torch.float16 else torch.bfloat16)
    assert all(p.grad is not None for p in model.parameters())
