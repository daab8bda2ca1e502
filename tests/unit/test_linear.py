"""mlbench.models.linear: bias-free logistic regression (task 2a)."""

from __future__ import annotations

import torch

from mlbench.models.linear import LogisticRegression


def test_no_bias_zero_init_and_shape():
    model = LogisticRegression(5)
    params = list(model.parameters())
    assert len(params) == 1 and params[0].shape == (1, 5)
    assert torch.all(params[0] == 0)
    out = model(torch.randn(3, 5))
    assert out.shape == (3,)
    assert torch.all(out == 0)


def test_forward_is_x_dot_w():
    model = LogisticRegression(3)
    with torch.no_grad():
        model.linear.weight.copy_(torch.tensor([[1.0, -2.0, 0.5]]))
    x = torch.tensor([[1.0, 1.0, 2.0], [0.0, 3.0, 0.0]])
    assert model(x).tolist() == [0.0, -6.0]
